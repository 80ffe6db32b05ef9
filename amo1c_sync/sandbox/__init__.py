"""Emulators of amoCRM and 1C (``amocrm_emulator/``, ``onec_emulator/``), their seed (the clinic's
example) and the sandbox story that plays it (`amo1c-sync sandbox`)."""
