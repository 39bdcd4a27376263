"""``python -m populate configs``: the stored configs of every config table with their names,
descriptions and owners; ``--unused`` keeps those that no row of another table refers to (no task,
search, extraction or result uses them: candidates to delete)."""

from __future__ import annotations


def add_command(command) -> None:
    """Register ``configs`` through ``command(name, handler, help) -> subparser``."""
    sub = command("configs", _cmd_configs, "list stored configs: names, description, who added them")
    sub.add_argument("--unused", action="store_true", help="only configs no task (or any other row) refers to")
    sub.add_argument("--table", help="only this config table (class name, e.g. ModelConfig)")
    sub.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def _cmd_configs(args) -> None:
    from populate.cli import results

    tables = config_tables()
    if args.table:
        known = {table.__name__: table for table in tables}
        if args.table not in known:
            raise ValueError(f"--table {args.table}: not a config table; known: {', '.join(known)}")
        tables = [known[args.table]]
    rows = [row for table in tables for row in listing(table, unused_only=args.unused)]
    results.print_rows(
        rows, as_json=args.json, columns=("table", "hash", "names", "description", "added_by", "added_at")
    )


def config_tables() -> list:
    """Every config table of the pipeline (:class:`schemas.configs.ConfigTable`), upstream first."""
    import datajoint as dj

    import schemas
    from schemas.configs import ConfigTable

    lookups = [table for m in schemas.stage_modules().values() for table in schemas.module_tables(m, dj.Lookup)]
    return [table for table in lookups if issubclass(table, ConfigTable)]


def unreferenced(table):
    """The rows of config ``table`` that no row of a child table (tasks, searches, results) refers to."""
    query = table()
    query.connection.dependencies.load()
    for child, info in query.children(as_objects=True, foreign_key_info=True):
        name = next(child_name for child_name, parent in info["attr_map"].items() if parent == table.hash_attribute)
        # the reference may be a secondary attribute (Search's dataset) or renamed: project it under the key's name
        query = query - (
            child.proj(name) if name == table.hash_attribute else child.proj(**{table.hash_attribute: name})
        )
    return query


def listing(table, unused_only: bool = False) -> list[dict]:
    """One row per config of ``table``: its hash, every name, the first description, who added it and when."""
    from schemas.config_notes import ConfigNote

    query = unreferenced(table) if unused_only else table()
    configs = query.to_dicts(order_by=table.hash_attribute)
    noted = []  # a database set up before ConfigNote existed has none
    if ConfigNote().is_declared:
        noted = (ConfigNote & dict(config_table=table.__name__)).to_dicts(order_by="added_at")
    rows = []
    for config in configs:
        config_hash = config[table.hash_attribute]
        own = [note for note in noted if note["config_hash"] == config_hash]
        names = dict.fromkeys(n for n in (config["config_name"], *(note["config_name"] for note in own)) if n)
        rows.append(
            dict(
                table=table.__name__,
                hash=config_hash,
                names=", ".join(names),
                description=next((note["description"] for note in own if note["description"]), ""),
                added_by=own[0]["added_by"] if own else None,
                added_at=own[0]["added_at"] if own else None,
            )
        )
    return rows
