"""The `w2s` command line: commands that parse, call one library function and print (app.py), every flag declared
once (flags.py), --config files and the effective configuration (config.py)."""
