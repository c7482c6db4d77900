"""The benchmark: how much the router moves per core, how fast, and in how much memory,
against the ceiling of the same machine.

    python -m bench                      # the full run (~3 minutes): see docs/performance.md
    python -m bench --events 20000 --latency-seconds 3 --skip-dead     # a quick look

Modules: ``phases`` (the four measurements), ``load`` (preload and paced produce),
``ceiling`` (the raw-consume process), ``sinks`` (the local destinations' process),
``process`` (RSS and CPU from /proc), ``profile`` (py-spy folding), ``report``.
"""
