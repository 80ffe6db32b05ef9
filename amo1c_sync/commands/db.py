from amo1c_sync.commands.common import open_store, settings_from
from amo1c_sync.logs import get_logger


def main(args) -> int:
    settings = settings_from(args)
    store = open_store(settings)
    store.upgrade(args.revision)
    get_logger("amo1c_sync.db").info("db.upgraded", revision=args.revision, backend=store.dialect)
    return 0
