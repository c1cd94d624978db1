"""Turns wrk outputs into one table (Markdown and JSON) with ratios to nginx and to the upstream.

Each row ran once per round (NAME.ROUND.wrk); the table shows each row's median
over the rounds, and the range of its requests/s.
"""
import glob
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
    ("gateway-baseline", "gateway, no plugins, baseline build (BENCH_BASELINE)"),
    ("gateway-accesslog", "gateway, no plugins, JSON access log of every request"),
    ("gateway-transform", "gateway + transform plugin"),
    ("gateway-3-plugins", "gateway + transform + 2 no-op plugins"),
    ("haproxy-rules", "HAProxy doing the transform's work natively"),
    ("gateway-ratelimit", "gateway + rate-limit plugin, in-process store"),
    ("gateway-ratelimit-redis", "gateway + rate-limit plugin, Redis on loopback"),
    ("gateway-aggregate", "gateway + aggregate plugin, three parts"),
    ("direct-c1", "upstream hit directly, one connection"),
    ("gateway-aggregate-c1", "gateway + aggregate plugin, three parts, one connection"),
] + [
    (f"gateway-jwt-{alg}{variant}", f"gateway + {alg.upper()} JWT, {label}")
    for alg in ("hs256", "rs256", "es256")
    for variant, label in (("", "checked in the host, verified-token cache"),
                           ("-nocache", "checked in the host, no cache"),
                           ("-in-plugin", "checked inside the plugin (wasm)"))
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


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarise(paths):
    """One row's rounds: the median of each figure, and every round kept for the JSON."""
    rounds = [parse(path) for path in sorted(paths)]
    return {"rps": median(r["rps"] for r in rounds),
            "rps_min": min(r["rps"] for r in rounds),
            "rps_max": max(r["rps"] for r in rounds),
            "p50_ms": median(r["p50_ms"] for r in rounds),
            "p99_ms": median(r["p99_ms"] for r in rounds),
            "non_2xx": sum(r["non_2xx"] for r in rounds),
            "socket_errors": "; ".join(r["socket_errors"] for r in rounds if r["socket_errors"]) or None,
            "rounds": rounds}


def targets(results):
    """The issue's two targets, as this run measured them."""
    lines = []
    nginx, plain, chain = (results.get(n) for n in ("nginx", "gateway", "gateway-3-plugins"))
    if nginx and plain:
        lines.append(f"- no-plugin gateway vs nginx: {plain['rps'] / nginx['rps']:.2f}x requests/s "
                     f"(target >= 1), p99 {plain['p99_ms']:.3f} ms vs {nginx['p99_ms']:.3f} ms "
                     f"(target: within 10%)")
    baseline = results.get("gateway-baseline")
    if plain and baseline:
        # The proxy saturates its one pinned CPU, so CPU per request is
        # 1/(requests/s); pairing rounds cancels the machine's drift.
        pairs = [b["rps"] / g["rps"] for g, b in zip(plain["rounds"], baseline["rounds"])]
        change = median(pairs) - 1
        lines.append(f"- CPU per request, this build vs the baseline: {change:+.1%} "
                     f"(median of {len(pairs)} paired rounds; "
                     f"{1e6 / plain['rps']:.2f} us vs {1e6 / baseline['rps']:.2f} us)")
    logged = results.get("gateway-accesslog")
    if plain and logged:
        lines.append(f"- access log on vs off: CPU per request {1e6 / logged['rps']:.2f} us vs "
                     f"{1e6 / plain['rps']:.2f} us ({logged['rps'] / plain['rps']:.2f}x requests/s; "
                     f"+{1e6 / logged['rps'] - 1e6 / plain['rps']:.2f} us per line)")
    if plain and chain:
        lines.append(f"- three-plugin chain vs no-plugin gateway: {chain['rps'] / plain['rps']:.2f}x "
                     f"(target >= 0.8)")
    for name, store in (("gateway-ratelimit", "in-process"), ("gateway-ratelimit-redis", "Redis")):
        limited = results.get(name)
        if plain and limited:
            lines.append(f"- rate-limited route ({store} store) vs no-plugin gateway: "
                         f"{limited['rps'] / plain['rps']:.2f}x requests/s; CPU per request "
                         f"{1e6 / limited['rps']:.2f} us vs {1e6 / plain['rps']:.2f} us "
                         f"(+{1e6 / limited['rps'] - 1e6 / plain['rps']:.2f} us for the decision)")
    aggregate, single, part = (results.get(n) for n in ("gateway-aggregate", "gateway-aggregate-c1", "direct-c1"))
    if aggregate and plain:
        lines.append(f"- aggregated request (three parts): {1e6 / aggregate['rps']:.2f} us of CPU "
                     f"({aggregate['rps'] / plain['rps']:.2f}x the no-plugin gateway's requests/s)")
    if single and part:
        lines.append(f"- aggregated answer over one part, one connection: p50 +{(single['p50_ms'] - part['p50_ms']) * 1000:.0f} us, "
                     f"p99 +{(single['p99_ms'] - part['p99_ms']) * 1000:.0f} us "
                     f"({single['p50_ms']:.3f}/{single['p99_ms']:.3f} ms vs {part['p50_ms']:.3f}/{part['p99_ms']:.3f} ms)")
    jwt = jwt_table(results)
    if jwt:
        lines.append(jwt)
    return "\n".join(lines)


def jwt_table(results):
    """CPU per request of each way of checking a JWT, as a ratio to the no-plugin request.

    The proxy saturates its one pinned CPU, so CPU per request is 1/(requests/s).
    """
    plain = results.get("gateway")
    if not plain:
        return ""
    base = 1e6 / plain["rps"]
    lines = ["", f"JWT checks, CPU per request (no-plugin request: {base:.2f} us = 1.00):", "",
             "| algorithm | host, cache | host, no cache | in plugin (wasm) |", "|---|---:|---:|---:|"]
    for alg in ("hs256", "rs256", "es256"):
        cells = []
        for variant in ("", "-nocache", "-in-plugin"):
            r = results.get(f"gateway-jwt-{alg}{variant}")
            cells.append(f"{1e6 / r['rps']:.1f} us ({plain['rps'] / r['rps']:.2f}x)" if r else "–")
        if any(c != "–" for c in cells):
            lines.append(f"| {alg.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 5 else ""


TLS_MODES = (("keepalive", "keep-alive (wrk over https)"),
             ("resumed", "one request per connection, resumed handshake"),
             ("handshake", "one request per connection, full handshake"))


def tls_table(work):
    """CPU per request over TLS, measured from the proxy's own CPU time
    (these rows need not saturate it: the load's handshakes share CPU 1)."""
    rows = {}
    for mode, _ in TLS_MODES:
        for proxy in ("nginx", "gateway"):
            rounds = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, f"{proxy}-tls-{mode}.*.tls")))]
            rounds = [r for r in rounds if r["requests"]]
            if rounds:
                us = median(r["cpu_ticks"] / r["ticks_per_s"] / r["requests"] * 1e6 for r in rounds)
                rps = median(r["requests"] / r["seconds"] for r in rounds)
                rows[(proxy, mode)] = {"cpu_us": us, "rps": rps, "rounds": rounds}
    if not rows:
        return "", {}
    lines = ["", "TLS (ECDSA P-256 certificate, TLS 1.3, X25519), proxy CPU per request from its own CPU time:", "",
             "| mode | nginx | gateway | gateway / nginx |", "|---|---:|---:|---:|"]
    for mode, label in TLS_MODES:
        n, g = rows.get(("nginx", mode)), rows.get(("gateway", mode))
        cell = lambda r: f"{r['cpu_us']:.1f} us ({r['rps'] / 1000:.1f}k/s)" if r else "–"
        ratio = f"{g['cpu_us'] / n['cpu_us']:.2f}" if n and g else "–"
        lines.append(f"| {label} | {cell(n)} | {cell(g)} | {ratio} |")
    return "\n".join(lines), {f"{p}-tls-{m}": r for (p, m), r in rows.items()}


IDLE_ROWS = (("nginx-idle-{}", "nginx"),
             ("gateway-idle-{}", "gateway, clients one after another"),
             ("gateway-idle-{}-burst", "gateway, all clients at once"),
             ("gateway-baseline-idle-{}", "baseline gateway (BENCH_BASELINE), one after another"),
             ("gateway-baseline-idle-{}-burst", "baseline gateway (BENCH_BASELINE), all at once"))


def idle_table(work):
    """Resident memory of idle kept-alive clients (tools/idle-load's figures)."""
    rows = {}
    for protocol in ("http1", "http2"):
        for pattern, _ in IDLE_ROWS:
            name = pattern.format(protocol)
            rounds = []
            for path in sorted(glob.glob(os.path.join(work, f"{name}.*.idle"))):
                words = open(path).read().split()
                figures = dict(zip(words[::2], words[1::2]))
                if "per_connection_kib" in figures:
                    rounds.append({k: float(v) for k, v in figures.items()})
            if rounds:
                rows[name] = {key: median(r[key] for r in rounds) for key in rounds[0]}
                rows[name]["rounds"] = rounds
    if not rows:
        return "", {}
    lines = ["", "Idle kept-alive clients, resident memory of the proxy (one worker):", "",
             "| protocol | row | clients answered / still open | before | highest | idle | per idle client | vs nginx |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for protocol in ("http1", "http2"):
        nginx = rows.get(f"nginx-idle-{protocol}")
        for pattern, label in IDLE_ROWS:
            r = rows.get(pattern.format(protocol))
            if not r:
                continue
            mib = lambda kib: f"{kib / 1024:.1f} MiB"
            ratio = f"{r['per_connection_kib'] / nginx['per_connection_kib']:.1f}x" if nginx and nginx["per_connection_kib"] > 0 else "–"
            lines.append(f"| {protocol} | {label} | {r['answered']:.0f} / {r['alive']:.0f} | {mib(r['rss_before_kib'])} | "
                         f"{mib(r['rss_peak_kib'])} | {mib(r['rss_idle_kib'])} | {r['per_connection_kib']:.1f} KiB | {ratio} |")
        seq, burst = rows.get(f"gateway-idle-{protocol}"), rows.get(f"gateway-idle-{protocol}-burst")
        if seq and burst:
            lines.append(f"| {protocol} | after the burst vs one after another | | | | "
                         f"{burst['rss_idle_kib'] / seq['rss_idle_kib']:.2f}x | | |")
    return "\n".join(lines), rows


def main():
    work, out, smoke, connections, duration, rounds = sys.argv[1:7]
    # BENCH_ROWS runs a subset: report the rows that ran, ratios where possible.
    found = {name: glob.glob(os.path.join(work, name + ".*.wrk")) for name, _ in ROWS}
    rows = [(name, label) for name, label in ROWS if found[name]]
    results = {name: summarise(found[name]) for name, _ in rows}
    nginx = results.get("nginx", {}).get("rps")
    direct = results.get("direct", {}).get("rps")
    ratio = lambda r, base: f"{r / base:.2f}" if base else "–"
    lines = [
        "| row | requests/s | range | p50 ms | p99 ms | vs nginx | vs direct |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in rows:
        r = results[name]
        r["vs_nginx"] = r["rps"] / nginx if nginx else None
        r["vs_direct"] = r["rps"] / direct if direct else None
        flag = "" if r["non_2xx"] == 0 and not r["socket_errors"] else " (errors!)"
        spread = f"{r['rps_min'] / 1000:.1f}k–{r['rps_max'] / 1000:.1f}k"
        lines.append(f"| {label}{flag} | {r['rps']:.0f} | {spread} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{ratio(r['rps'], nginx)} | {ratio(r['rps'], direct)} |")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    setup = (f"median of {rounds} round(s), rows taking turns; "
             f"wrk -t1 -c{connections} -d{duration}; proxies on CPU 0 (one worker each), "
             f"upstream and wrk on CPU 1; 1 KiB response body")
    table = "\n".join(lines)
    kind = "smoke run (debug build, not figures)" if smoke == "true" else "full run"
    base = "latest"
    if len([r for r in rows if r[0] != "gateway-baseline"]) < len(ROWS) - 1:
        kind, base = "partial run (BENCH_ROWS)", "partial"
    markdown = f"{table}\n\n{kind}. {setup}. Machine: {machine}.\n"
    measured = targets(results)
    if measured:
        markdown += f"\n{measured}\n"
    tls, tls_results = tls_table(work)
    if tls:
        markdown += f"{tls}\n"
        results.update(tls_results)
    idle, idle_results = idle_table(work)
    if idle:
        markdown += f"{idle}\n"
        results.update(idle_results)
    open(os.path.join(out, base + ".md"), "w").write(markdown)
    json.dump({"kind": kind, "setup": setup, "machine": machine, "rows": results},
              open(os.path.join(out, base + ".json"), "w"), indent=2)
    print(markdown)


main()
