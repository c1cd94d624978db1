"""Turns wrk outputs into one table (Markdown and JSON) with ratios to nginx and to the upstream."""
import json
import os
import platform
import re
import sys

ROWS = [
    ("direct", "upstream hit directly (the machine's limit)"),
    ("nginx", "nginx, proxy_pass with upstream keep-alive"),
    ("haproxy", "HAProxy, plain HTTP mode"),
    ("gateway", "gateway, no plugins"),
    ("gateway-transform", "gateway + transform plugin"),
    ("gateway-3-plugins", "gateway + transform + 2 no-op plugins"),
    ("haproxy-rules", "HAProxy doing the transform's work natively"),
]
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def millis(text):
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not match:
        raise ValueError(f"wrk latency {text!r} not understood")
    number, unit = match.groups()
    return float(number) * UNITS[unit]


def parse(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    # The distribution's own lines ("     50%  398.00us"), not "90.50%" columns.
    p50 = millis(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
    p99 = millis(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket = re.search(r"Socket errors: (.*)", text)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99,
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket.group(1) if socket else None}


def main():
    work, out, smoke, connections, duration = sys.argv[1:6]
    # BENCH_ROWS runs a subset: report the rows that ran, ratios where possible.
    rows = [(name, label) for name, label in ROWS if os.path.exists(os.path.join(work, name + ".wrk"))]
    results = {name: parse(os.path.join(work, name + ".wrk")) for name, _ in rows}
    nginx = results.get("nginx", {}).get("rps")
    direct = results.get("direct", {}).get("rps")
    ratio = lambda r, base: f"{r / base:.2f}" if base else "–"
    lines = [
        "| row | requests/s | p50 ms | p99 ms | vs nginx | vs direct |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in rows:
        r = results[name]
        r["vs_nginx"] = r["rps"] / nginx if nginx else None
        r["vs_direct"] = r["rps"] / direct if direct else None
        flag = "" if r["non_2xx"] == 0 and not r["socket_errors"] else " (errors!)"
        lines.append(f"| {label}{flag} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{ratio(r['rps'], nginx)} | {ratio(r['rps'], direct)} |")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    setup = (f"wrk -t1 -c{connections} -d{duration}; proxies on CPU 0 (one worker each), "
             f"upstream and wrk on CPU 1; 1 KiB response body")
    table = "\n".join(lines)
    kind = "smoke run (debug build, not figures)" if smoke == "true" else "full run"
    base = "latest"
    if len(rows) < len(ROWS):
        kind, base = "partial run (BENCH_ROWS)", "partial"
    markdown = f"{table}\n\n{kind}. {setup}. Machine: {machine}.\n"
    open(os.path.join(out, base + ".md"), "w").write(markdown)
    json.dump({"kind": kind, "setup": setup, "machine": machine, "rows": results},
              open(os.path.join(out, base + ".json"), "w"), indent=2)
    print(markdown)


main()
