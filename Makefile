# Shortcuts for the scripts (which set up .venv themselves on first use).
.PHONY: lint format test test-fast test-all

lint:        ## ruff check, ruff format --check, mypy
	scripts/lint

format:      ## apply ruff's fixes and formatting
	scripts/lint --fix

test:        ## the whole suite, as CI runs it
	scripts/test

test-fast:   ## unit tests only (tiny generated models, scripted members): about a minute
	scripts/test -m "not integration"

test-all:    ## every test, the slowest too
	scripts/test --runslow
