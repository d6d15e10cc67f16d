#!/usr/bin/env python3
"""Container-level chaos test for the docker-compose cluster (issue 6).

compose up; issue a key through node 2 and use it through node 3's proxy; docker kill the
leader (writes succeed again within 2 s, traffic on the survivors never fails); disconnect a
node from the raft network (the majority keeps working, the isolated node fences itself after
its staleness bound; reconnect: it converges); restart all nodes (state survives); the
five-node profile (add nodes 4 and 5, remove one); down -v. Prints figures and a final
'N passed, M failed' line. Every wait is bounded.
"""
import json, os, subprocess, sys, threading, time, urllib.request, urllib.error

PROJECT = "raftgate-chaos"
ADMIN = {i: f"http://127.0.0.1:720{i}" for i in range(1, 6)}
PROXY = {i: f"http://127.0.0.1:730{i}" for i in range(1, 6)}
results = []


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True).stdout


def compose(*args, check=True):
    return sh("docker-compose", "-p", PROJECT, "--profile", "five", *args, check=check) if args and args[0] in ("down",) \
        else sh("docker-compose", "-p", PROJECT, *args, check=check)


def http(method, url, token=None, body=None, timeout=5):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except Exception:
        return 0, None


def check(name, ok, detail=""):
    results.append(ok)
    print(f"  {'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def wait(pred, timeout, step=0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def health(i):
    s, b = http("GET", f"{ADMIN[i]}/v1/health", timeout=1)
    return b if s == 200 else None


def leader(ids):
    for i in ids:
        h = health(i)
        if h and h.get("state") == "Leader":
            return i
    return None


def container(i):
    return sh("docker-compose", "-p", PROJECT, "ps", "-q", f"raftgate-{i}").strip()


def main():
    token = os.urandom(24).hex()
    token_file = os.path.abspath(".raftgate-chaos-token")
    with open(token_file, "w") as f:
        f.write(token + "\n")
    os.environ["RAFTGATE_ADMIN_TOKEN_FILE"] = token_file
    T = token
    try:
        compose("up", "-d")
        # `ready`: fresh, registered, and the bootstrap admin token applied on that node.
        ok = wait(lambda: all(health(i) and health(i).get("ready") for i in (1, 2, 3)), 60)
        check("3-node cluster up and ready", bool(ok))
        # Policy through node 2, traffic through node 3.
        for m, p, b in [
            ("PUT", "/v1/roles/reader", {"permissions": [{"methods": ["GET"], "path": "/**"}]}),
            ("PUT", "/v1/routes/demo", {"path_prefix": "/", "upstreams": ["http://upstream:9000"]}),
            ("POST", "/v1/consumers", {"name": "demo", "roles": ["reader"]}),
        ]:
            s, _ = http(m, ADMIN[2] + p, T, b)
            assert s in (200, 201), (m, p, s)
        s, key = http("POST", ADMIN[2] + "/v1/keys", T, {"consumer": "demo"})
        key = key["key"]
        s, echo = http("GET", PROXY[3] + "/hello", key)
        check("key issued via node 2 works through node 3's proxy", s == 200 and echo and echo["headers"].get("x-gateway-consumer") == "demo", f"{s}")

        # Kill the leader while clients keep calling the survivors' proxies.
        ids = [1, 2, 3]
        L = wait(lambda: leader(ids), 10)
        survivors = [i for i in ids if i != L]
        failures, calls, stop = [], [0], threading.Event()

        def traffic():
            while not stop.is_set():
                for i in survivors:
                    s, _ = http("GET", PROXY[i] + "/x", key, timeout=2)
                    calls[0] += 1
                    if s != 200:
                        failures.append((i, s))
                time.sleep(0.02)

        th = threading.Thread(target=traffic)
        th.start()
        time.sleep(0.5)
        sh("docker", "kill", container(L))
        t0 = time.time()
        n = [0]

        def write_ok():
            n[0] += 1
            return http("POST", ADMIN[survivors[n[0] % 2]] + "/v1/consumers", T, {"name": f"after-kill-{n[0]}"}, timeout=3)[0] == 201

        ok = wait(write_ok, 10, step=0.02)
        failover = time.time() - t0
        time.sleep(1.0)
        stop.set()
        th.join()
        check("writes succeed again within 2 s of docker kill of the leader", bool(ok) and failover < 2.0, f"{failover:.2f} s")
        check("traffic on the survivors never failed", not failures, f"{calls[0]} calls, failures {failures[:5]}")
        compose("start", f"raftgate-{L}")
        ok = wait(lambda: all(health(i) and health(i).get("fresh") for i in ids), 30)
        check("the killed node rejoins", bool(ok))

        # Cut one follower off the raft network.
        L = wait(lambda: leader(ids), 10)
        victim = [i for i in ids if i != L][0]
        net = f"{PROJECT}_raft"
        sh("docker", "network", "disconnect", net, container(victim))
        t0 = time.time()
        ok = wait(lambda: http("POST", ADMIN[L] + "/v1/consumers", T, {"name": f"during-cut-{int(time.time()*1000)}"}, timeout=3)[0] == 201, 5)
        check("the majority keeps taking writes", bool(ok))
        fenced = wait(lambda: http("GET", PROXY[victim] + "/x", key, timeout=2)[0] == 503, 10, step=0.05)
        took = time.time() - t0
        check("the isolated node fences itself after its staleness bound", bool(fenced) and took < 3.5, f"503 after {took:.2f} s (bound 2 s)")
        # Reconnect with the node's alias: peers know it by that name.
        sh("docker", "network", "connect", "--alias", f"raft-{victim}", net, container(victim))
        t0 = time.time()

        def converged():
            hs = [health(i) for i in ids]
            return all(h and h.get("fresh") for h in hs) and len({h["last_applied"] for h in hs}) == 1

        ok = wait(converged, 30)
        check("after reconnecting it converges", bool(ok), f"{time.time() - t0:.2f} s")

        # Restart everything; the state is still there.
        compose("restart")
        ok = wait(lambda: all(health(i) and health(i).get("fresh") for i in ids), 60)
        s, _ = http("GET", PROXY[1] + "/after-restart", key)
        check("after docker-compose restart all state is still there", bool(ok) and s == 200, f"proxy {s}")

        # Five nodes: add 4 and 5, remove one.
        sh("docker-compose", "-p", PROJECT, "--profile", "five", "up", "-d", "raftgate-4", "raftgate-5")
        wait(lambda: health(4) and health(5), 30)
        added = []
        for i in (4, 5):
            s, b = http("POST", ADMIN[1] + "/v1/cluster/members", T, {"id": i, "raft_addr": f"raft-{i}:7101"}, timeout=90)
            added.append(s)
            if s != 200:
                print("    join", i, s, b)
        s, c = http("GET", ADMIN[4] + "/v1/cluster", T)
        voters = sorted(m["id"] for m in (c or {}).get("members", []) if m.get("voter"))
        check("nodes 4 and 5 join as voters", added == [200, 200] and voters == [1, 2, 3, 4, 5], f"{added} voters {voters}")
        s, _ = http("DELETE", ADMIN[1] + "/v1/cluster/members/5", T, timeout=30)
        s2, c = http("GET", ADMIN[2] + "/v1/cluster", T)
        voters = sorted(m["id"] for m in (c or {}).get("members", []) if m.get("voter"))
        check("a member is removed", s == 200 and voters == [1, 2, 3, 4], f"{s} voters {voters}")
        # A new voter vouches once it renewed its freshness lease (within one renewal period).
        fresh4 = wait(lambda: (health(4) or {}).get("fresh"), 5)
        s, _ = http("GET", PROXY[4] + "/five", key)
        check("the key works through node 4 once it is fresh", bool(fresh4) and s == 200, f"{s}")
    except Exception as e:  # a crash of the script is a failure, not a pass
        check("the scenario ran to the end", False, repr(e))
        print(sh("docker-compose", "-p", PROJECT, "logs", "--tail", "30", check=False)[-4000:])
    finally:
        subprocess.run(["docker-compose", "-p", PROJECT, "--profile", "five", "down", "-v"], capture_output=True)
        try:
            os.remove(token_file)
        except OSError:
            pass
    passed = sum(results)
    print(f"docker-chaos: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
