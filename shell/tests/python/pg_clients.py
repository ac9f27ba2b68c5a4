"""psycopg 3 and SQLAlchemy + pandas read runql over the PostgreSQL wire protocol.

Run by shell/tests/it/postgres.rs with RUNQL_PG_PORT and RUNQL_PG_PASSWORD set to a
`runql serve --pg-port` it started; prints one JSON object of what the clients read.
"""

import json
import os
import threading
import time

import pandas as pd
import psycopg
import sqlalchemy

port = int(os.environ["RUNQL_PG_PORT"])
password = os.environ["RUNQL_PG_PASSWORD"]
out = {}

with psycopg.connect(
    host="127.0.0.1", port=port, user="reader", password=password, dbname="runql", connect_timeout=10
) as conn:
    # A server-side parameter: the extended query protocol (Parse/Bind/Execute).
    cur = conn.execute(
        "SELECT project, count(*) AS n FROM runs WHERE project = %s GROUP BY project", ("mnist-cnn",)
    )
    out["param_query"] = [list(r) for r in cur.fetchall()]
    out["columns"] = [d.name for d in cur.description]
    # The simple query protocol.
    cur = conn.execute("SELECT count(*) FROM runs", prepare=False)
    out["runs"] = cur.fetchone()[0]
    # COPY (query) TO STDOUT, row by row.
    with conn.cursor().copy(
        "COPY (SELECT project, count(*) AS n FROM runs GROUP BY project ORDER BY project) TO STDOUT"
    ) as copy:
        out["copy_rows"] = [list(r) for r in copy.rows()]
    # The tables a client lists (information_schema).
    cur = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
    )
    out["tables"] = [r[0] for r in cur.fetchall()]
    # A write is refused with SQLSTATE 25006.
    try:
        conn.execute("CREATE TABLE x (a int)")
        out["write"] = "accepted"
    except psycopg.Error as e:
        out["write"] = e.sqlstate
    conn.rollback()

# A cancel request (what psql's Ctrl-C sends) stops a statement while its rows are computed.
with psycopg.connect(
    host="127.0.0.1", port=port, user="reader", password=password, dbname="runql", connect_timeout=10
) as conn:
    timer = threading.Timer(1.0, conn.cancel)
    timer.start()
    started = time.monotonic()
    try:
        conn.execute(
            "SELECT sum(a.value * b.value) FROM generate_series(1, 100000) a "
            "CROSS JOIN generate_series(1, 100000) b",
            prepare=False,
        )
        out["cancel"] = "answered"
    except psycopg.Error as e:
        out["cancel"] = e.sqlstate
    out["cancel_seconds"] = time.monotonic() - started
    conn.rollback()
    out["after_cancel"] = conn.execute("SELECT 1").fetchone()[0]

engine = sqlalchemy.create_engine(f"postgresql+psycopg://reader:{password}@127.0.0.1:{port}/runql")
inspector = sqlalchemy.inspect(engine)
out["sqlalchemy_tables"] = sorted(inspector.get_table_names())
out["sqlalchemy_run_columns"] = [c["name"] for c in inspector.get_columns("runs")]
df = pd.read_sql(
    "SELECT project, count(*) AS n FROM runs GROUP BY project ORDER BY project", engine
)
out["pandas"] = df.to_dict(orient="list")
print(json.dumps(out, default=str))
