"""Turns wrk outputs into one table (Markdown and JSON) with ratios to nginx and to Envoy.

Each row ran once per round (NAME.ROUND.wrk, with the proxy's CPU time during
the run appended by bench/run); the table shows each row's median over the
rounds, and the range of its requests/s. The ratios are of CPU time per
request, which is what a proxy costs whatever the load's own limits.
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
    ("envoy", "Envoy, one worker"),
    ("gateway", "gateway, no plugins, default workers"),
    ("gateway-1worker", "gateway, no plugins, `workers: 1`"),
    ("hyper-floor", "the least a hyper proxy does (tools/hyper-floor), one worker"),
    ("gateway-baseline", "gateway, no plugins, baseline build (BENCH_BASELINE)"),
    ("gateway-accesslog", "gateway, no plugins, JSON access log of every request"),
    ("gateway-transform", "gateway + transform plugin"),
    ("envoy-transform", "Envoy + the same transform as a proxy-wasm filter (V8)"),
    ("gateway-3-plugins", "gateway + transform, CORS and rate-limit plugins"),
    ("envoy-3-plugins", "Envoy + proxy-wasm transform, native CORS and local rate limit"),
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
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    ticks = re.search(r"^proxy_cpu_ticks: (\d+)\nticks_per_s: (\d+)", text, re.M)
    cpu_us = (int(ticks.group(1)) / int(ticks.group(2)) * 1e6 / requests
              if ticks and requests else None)
    return {"rps": rps, "cpu_us": cpu_us, "p50_ms": p50, "p99_ms": p99,
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket.group(1) if socket else None}


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarise(paths):
    """One row's rounds: the median of each figure, and every round kept for the JSON."""
    rounds = [parse(path) for path in sorted(paths)]
    cpu = [r["cpu_us"] for r in rounds if r["cpu_us"] is not None]
    return {"rps": median(r["rps"] for r in rounds),
            "cpu_us": median(cpu) if cpu else None,
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
    one, envoy = results.get("gateway-1worker"), results.get("envoy")
    cpu = lambda r: r and r.get("cpu_us")
    if cpu(nginx) and cpu(plain):
        lines.append(f"- no-plugin gateway, default workers, vs nginx: {plain['cpu_us'] / nginx['cpu_us']:.2f}x "
                     f"CPU per request ({plain['cpu_us']:.1f} vs {nginx['cpu_us']:.1f} us; target <= 1.10); "
                     f"p99 {plain['p99_ms']:.3f} vs {nginx['p99_ms']:.3f} ms")
    floor = results.get("hyper-floor")
    if cpu(floor) and cpu(plain) and cpu(nginx):
        lines.append(f"- hyper's share: the least hyper proxy vs nginx {floor['cpu_us'] / nginx['cpu_us']:.2f}x; "
                     f"the gateway vs it {plain['cpu_us'] / floor['cpu_us']:.2f}x "
                     f"({plain['cpu_us'] - floor['cpu_us']:.1f} us per request of the gateway's own)")
    if cpu(one) and cpu(plain):
        lines.append(f"- default workers vs `workers: 1`: {plain['cpu_us'] / one['cpu_us']:.2f}x CPU per request "
                     f"(target <= 1.03)")
    if cpu(chain) and cpu(plain):
        lines.append(f"- three plugins whose hooks all run vs no plugins: {chain['cpu_us'] / plain['cpu_us']:.2f}x "
                     f"CPU per request ({chain['cpu_us']:.1f} vs {plain['cpu_us']:.1f} us; target <= 1.25)")
    for name, peer in (("gateway", "envoy"), ("gateway-transform", "envoy-transform"),
                       ("gateway-3-plugins", "envoy-3-plugins")):
        ours, theirs = results.get(name), results.get(peer)
        if cpu(ours) and cpu(theirs):
            lines.append(f"- {name} vs {peer}: {ours['cpu_us'] / theirs['cpu_us']:.2f}x CPU per request "
                         f"({ours['cpu_us']:.1f} vs {theirs['cpu_us']:.1f} us)")
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
             ("gateway-idle-chain-{}", "gateway with the three-plugin chain loaded, one after another"),
             ("envoy-idle-{}", "Envoy, one after another"),
             ("envoy-idle-chain-{}", "Envoy with its three-filter chain loaded, one after another"),
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


INSTRUCTION_ROWS = (("instructions-nginx", "nginx (`master_process off`, so callgrind follows its one worker)"),
                    ("instructions-gateway", "gateway, no plugins"),
                    ("instructions-hyper-floor", "the least a hyper proxy does (tools/hyper-floor)"),
                    ("instructions-gateway-3-plugins", "gateway + transform, CORS and rate-limit plugins"))


def instructions_table(work):
    """Instructions per proxied request, counted by callgrind under the load."""
    rows = {}
    for name, label in INSTRUCTION_ROWS:
        path = os.path.join(work, name + ".instructions")
        if os.path.exists(path):
            words = open(path).read().split()
            figures = {k: int(v) for k, v in zip(words[::2], words[1::2])}
            rows[name] = {**figures, "per_request": figures["instructions"] / figures["requests"]}
    if not rows:
        return "", {}
    lines = ["", "Instructions per proxied request (callgrind, the load of the table above "
             "for 10 s; start-up not counted):", "", "| row | instructions per request | requests counted |",
             "|---|---:|---:|"]
    for name, label in INSTRUCTION_ROWS:
        if name in rows:
            lines.append(f"| {label} | {rows[name]['per_request'] / 1000:.1f}k | {rows[name]['requests']} |")
    return "\n".join(lines), rows


def main():
    work, out, smoke, connections, duration, rounds = sys.argv[1:7]
    # BENCH_ROWS runs a subset: report the rows that ran, ratios where possible.
    found = {name: glob.glob(os.path.join(work, name + ".*.wrk")) for name, _ in ROWS}
    rows = [(name, label) for name, label in ROWS if found[name]]
    results = {name: summarise(found[name]) for name, _ in rows}
    nginx = results.get("nginx", {}).get("cpu_us")
    envoy = results.get("envoy", {}).get("cpu_us")
    ratio = lambda r, base: f"{r / base:.2f}" if r and base else "–"
    lines = [
        "| row | requests/s | range | CPU µs/req | p50 ms | p99 ms | CPU vs nginx | CPU vs Envoy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in rows:
        r = results[name]
        r["cpu_vs_nginx"] = r["cpu_us"] / nginx if r["cpu_us"] and nginx else None
        r["cpu_vs_envoy"] = r["cpu_us"] / envoy if r["cpu_us"] and envoy else None
        flag = "" if r["non_2xx"] == 0 and not r["socket_errors"] else " (errors!)"
        spread = f"{r['rps_min'] / 1000:.1f}k–{r['rps_max'] / 1000:.1f}k"
        cpu = f"{r['cpu_us']:.1f}" if r["cpu_us"] else "–"
        lines.append(f"| {label}{flag} | {r['rps']:.0f} | {spread} | {cpu} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{ratio(r['cpu_us'], nginx)} | {ratio(r['cpu_us'], envoy)} |")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    setup = (f"median of {rounds} round(s), rows taking turns; "
             f"wrk -t1 -c{connections} -d{duration}; proxies on CPU 0 (one worker each), "
             f"CPU per request from the proxy process's own CPU time during the run, "
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
    counted, counted_results = instructions_table(work)
    if counted:
        markdown += f"{counted}\n"
        results.update(counted_results)
    open(os.path.join(out, base + ".md"), "w").write(markdown)
    json.dump({"kind": kind, "setup": setup, "machine": machine, "rows": results},
              open(os.path.join(out, base + ".json"), "w"), indent=2)
    print(markdown)


main()
