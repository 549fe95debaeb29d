# The shop's two everyday commands: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCALES := bot/locales

.PHONY: run test install i18n compile-locales lint typecheck bench bench-flash bench-updates bench-payments bench-scale bench-review clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

compile-locales: $(STAMP)
	@if [ -d $(LOCALES) ] && ls $(LOCALES)/*/LC_MESSAGES/messages.po >/dev/null 2>&1; then \
		$(VENV)/bin/pybabel -q compile --statistics -d $(LOCALES) -D messages; fi

# Extract every _() and N_() from the code, merge into both catalogs, compile.
i18n: $(STAMP)
	$(VENV)/bin/pybabel -q extract --no-location --sort-output -k _ -k N_ -k ngettext:1,2 \
		-o $(LOCALES)/messages.pot bot core
	$(VENV)/bin/pybabel -q update --no-fuzzy-matching --ignore-obsolete -i $(LOCALES)/messages.pot -d $(LOCALES) -D messages
	$(MAKE) compile-locales

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy core bot tests/botapi tests/epay

test: compile-locales lint typecheck
	$(VENV)/bin/pytest

run: compile-locales
	$(VENV)/bin/cardshop migrate
	$(VENV)/bin/cardshop seed-demo --if-empty
	$(VENV)/bin/cardshop run

# Purchases per second through Orders.place against the same statements in the plain driver.
bench: $(STAMP)
	$(PY) -m bench.purchase

# 1,000 members press Pay within one second for 100 codes, through the real dispatcher.
bench-flash: compile-locales
	$(PY) -m bench.flash_sale

# Updates per second through the real bot (both adapters), against the bare framework.
bench-updates: compile-locales
	$(PY) -m bench.updates

# Pre-checkout answers while the bot is busy (both adapters), and credits per second.
bench-payments: compile-locales
	$(PY) -m bench.payments

# Per-update latency in a grown shop (100k members / 10k products / 1M codes) vs a small one.
bench-scale: compile-locales
	$(PY) -m bench.scale

# The quarterly review: set-based vs per-member, then a million generated members.
bench-review: $(STAMP)
	$(PY) -m bench.review

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
