#!/usr/bin/env python3
"""Runs SQL printed by `zerogate map --emit-sql duckdb` in DuckDB and writes the query's result
as CSV: `duckdb-run.py QUERY.sql RESULT.csv`. Every statement but the last is set-up (macros and
the view over the flow logs); the last is the query. Used by the tests and the benchmark."""
import sys
import time

import duckdb


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    sql = open(sys.argv[1], encoding="utf-8").read()
    statements = [s for s in sql.split(";\n") if s.strip()]
    con = duckdb.connect()
    started = time.perf_counter()
    for statement in statements[:-1]:
        con.execute(statement)
    con.execute(f"COPY ({statements[-1]}) TO '{sys.argv[2]}' (HEADER, DELIMITER ',')")
    print(f"duckdb {duckdb.__version__}: {time.perf_counter() - started:.3f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
