# Makes test/ a package, so that `python3 -m unittest test/test_fake_sequin.py` finds this
# directory instead of the standard library's own `test` package.
