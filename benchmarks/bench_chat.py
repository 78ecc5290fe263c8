"""Consultation chat latency with many open consultations, and the doctor queue's latency.

A real `yiyun serve` process (one uvicorn worker) on SQLite or PostgreSQL. `--open`
consultations (default 500) are started by their patients and accepted by 50 doctors;
each patient and each doctor holds the consultation's WebSocket open (2 × 500 sockets).
Patients then send messages at `--rates` messages per second in total (each patient at
random moments; 500 chats where each side writes every 20-30 s make 20-50 messages a second); the latency is from the patient's send to the doctor's receipt of the
fanned-out frame, which the server sends only after the message is stored as a FHIR
Communication. Target: p95 ≤ 100 ms. Then `GET /api/consultations/queue` (what the
doctor's queue page renders) is timed for a doctor whose department has `--waiting`
consultations waiting.

Client and server share the machine, so figures include the client's own work. `lost`
counts messages not received within 10 s after a phase ends (still queued, not dropped);
`machine_load_1min` is the load average before and after the phase (other work on the
machine slows every figure).
Prints a table and saves `benchmarks/results/chat.json`.

    .venv/bin/python benchmarks/bench_chat.py [--backends sqlite,postgresql] [--open 500] [--rates 10,25,50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server, drop_database, machine_info, new_database, save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
TENANT = "bench-chat"
SECRET = "bench-chat-secret-key-0123456789abcdef"
DEPT = "HealthcareService/hs-bench"
DOCTORS = 50


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 2) if values else float("nan")


def stats(values_ms: list[float]) -> dict:
    return {"n": len(values_ms), "p50_ms": pct(values_ms, 0.50), "p95_ms": pct(values_ms, 0.95),
            "p99_ms": pct(values_ms, 0.99), "max_ms": round(max(values_ms), 2) if values_ms else None}


def token(kind: str, pid: str) -> str:
    from yiyun.identity.tokens import issue_access_token

    if kind == "patient":
        tok, _ = issue_access_token(tenant=TENANT, scope="patient/*.cruds", subject=f"user:{pid}",
                                    roles=("patient",), patient=pid, fhir_user=f"Patient/{pid}", minutes=240)
    elif kind == "doctor":
        tok, _ = issue_access_token(tenant=TENANT, scope="user/*.cruds", subject=f"user:{pid}", roles=("doctor",),
                                    fhir_user=f"Practitioner/{pid}", minutes=240)
    else:
        tok, _ = issue_access_token(tenant=TENANT, scope="system/*.cruds", subject="service:bench", minutes=240)
    return tok


def directory(patients: int) -> list[dict]:
    out: list[dict] = [
        {"resourceType": "Organization", "id": "org-bench", "name": "基准医院", "active": True},
        {"resourceType": "HealthcareService", "id": "hs-bench", "active": True, "name": "内分泌科门诊",
         "providedBy": {"reference": "Organization/org-bench"}},
    ]
    for i in range(DOCTORS):
        out.append({"resourceType": "Practitioner", "id": f"d{i}", "active": True, "name": [{"text": f"医生{i}"}]})
        out.append({"resourceType": "PractitionerRole", "id": f"r{i}", "active": True,
                    "practitioner": {"reference": f"Practitioner/d{i}"},
                    "organization": {"reference": "Organization/org-bench"},
                    "healthcareService": [{"reference": DEPT}]})
    for i in range(patients):
        out.append({"resourceType": "Patient", "id": f"p{i}", "active": True, "name": [{"text": f"患者{i}"}]})
    return out


async def seed(base: str, n_open: int, n_waiting: int) -> tuple[list[tuple[str, str, str]], str]:
    """Returns [(consultation id, patient id, doctor id)] of accepted consultations, and a doctor."""
    patients = n_open + n_waiting
    system = {"Authorization": f"Bearer {token('system', '')}"}
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        resources = directory(patients)
        for start in range(0, len(resources), 200):
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in resources[start:start + 200]]}
            r = await http.post("/fhir/R4", json=bundle, headers=system)
            assert r.status_code == 200, r.text[:500]
        sem = asyncio.Semaphore(8)

        async def open_one(i: int, accept: bool):
            async with sem:
                h = {"Authorization": f"Bearer {token('patient', f'p{i}')}"}
                r = await http.post("/api/consultations", headers=h, json={
                    "mode": "text", "department": DEPT, "form": {"chief_complaint": "复诊开药", "duration": "一年"}})
                assert r.status_code == 201, r.text
                cid = r.json()["id"]
                doctor = f"d{i % DOCTORS}"
                if accept:
                    a = await http.post(f"/api/consultations/{cid}/accept",
                                        headers={"Authorization": f"Bearer {token('doctor', doctor)}"})
                    assert a.status_code == 200, a.text
                return cid, f"p{i}", doctor

        accepted = await asyncio.gather(*(open_one(i, True) for i in range(n_open)))
        await asyncio.gather(*(open_one(n_open + i, False) for i in range(n_waiting)))
    return list(accepted), "d0"


async def chat_latency(base: str, consultations: list[tuple[str, str, str]], rates: list[int],
                       seconds: float) -> dict:
    import websockets

    ws_base = base.replace("http://", "ws://")
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    received = asyncio.Event()

    async def doctor_reader(ws):
        try:
            await _doctor_reader(ws)
        except websockets.ConnectionClosed:
            pass

    async def _doctor_reader(ws):
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("type") == "message" and frame.get("from") == "patient":
                t0 = sent_at.pop(frame.get("client_id") or "", None)
                if t0 is not None:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    received.set()

    async def drain(ws):
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass

    patients, readers = [], []
    sem = asyncio.Semaphore(50)

    async def connect(url):
        async with sem:
            ws = await websockets.connect(url, max_queue=None, open_timeout=60)
            # ready once the server has sent hello and replayed the conversation so far
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello", hello
            return ws

    conns = []
    for cid, pid, did in consultations:
        conns.append(connect(f"{ws_base}/api/consultations/{cid}/ws?access_token={token('patient', pid)}"))
        conns.append(connect(f"{ws_base}/api/consultations/{cid}/ws?access_token={token('doctor', did)}"))
    sockets = await asyncio.gather(*conns)
    for i in range(0, len(sockets), 2):
        patients.append(sockets[i])
        readers.append(asyncio.create_task(drain(sockets[i])))
        readers.append(asyncio.create_task(doctor_reader(sockets[i + 1])))
    await asyncio.sleep(2.0)  # the replayed frames settle

    out = {"open_consultations": len(consultations), "websockets": len(sockets), "rates": {}}
    counter = 0
    # a first, unrecorded phase warms the server (first statements of each kind, caches)
    for rate in [-10, *rates]:
        warm_up = rate < 0
        rate = abs(rate)
        latencies.clear()
        sent_at.clear()
        failed = 0
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        n = int(rate * (5 if warm_up else seconds))
        for k in range(n):
            # Poisson arrivals at `rate` per second, each from a random patient
            target = started + k / rate + random.uniform(-0.5, 0.5) / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ws = random.choice(patients)
            counter += 1
            cid = f"b{counter}"
            sent_at[cid] = time.perf_counter()
            try:
                await ws.send(json.dumps({"type": "message", "text": f"今天血糖 {random.randint(5, 12)} mmol/L",
                                          "client_id": cid}))
            except websockets.ConnectionClosed:
                failed += 1
        deadline = time.perf_counter() + 10
        while sent_at and time.perf_counter() < deadline:
            received.clear()
            try:
                await asyncio.wait_for(received.wait(), 1)
            except asyncio.TimeoutError:
                pass
        achieved = n / (time.perf_counter() - started)
        if warm_up:
            continue
        out["rates"][str(rate)] = {**stats(latencies), "sent": n, "lost": len(sent_at), "send_failed": failed,
                                   "achieved_msgs_per_s": round(achieved, 1),
                                   "machine_load_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
        print(f"  {rate:>4} msg/s: p50 {pct(latencies, .5):7.1f} ms  p95 {pct(latencies, .95):7.1f} ms  "
              f"p99 {pct(latencies, .99):7.1f} ms  lost {len(sent_at)}", flush=True)
    for t in readers:
        t.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return out


async def queue_latency(base: str, doctor: str, requests: int) -> dict:
    h = {"Authorization": f"Bearer {token('doctor', doctor)}"}
    times = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        first = (await http.get("/api/consultations/queue", headers=h)).json()
        for _ in range(requests):
            t0 = time.perf_counter()
            r = await http.get("/api/consultations/queue", headers=h)
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
    return {**stats(times), "waiting_in_queue": len(first["waiting"]), "active_of_doctor": len(first["active"])}


async def verify_bench_patients(url: str, work: Path, count: int) -> None:
    """Online consultations need the patient's real name: verified before the server starts."""
    from real_name import verify_patients

    from yiyun.core.db import create_engine_for
    from yiyun.core.settings import get_settings

    os.environ.update({"YIYUN_DATA_DIR": str(work), "YIYUN_SECRET_KEY": SECRET})
    get_settings.cache_clear()
    engine = create_engine_for(url)
    try:
        await verify_patients(engine, TENANT, [f"p{i}" for i in range(count)])
    finally:
        await engine.dispose()


def run_backend(backend: str, args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    url = new_database(backend, work, "chat")
    env = {**os.environ, "YIYUN_DATABASE_URL": url, "YIYUN_DATA_DIR": str(work), "YIYUN_SECRET_KEY": SECRET,
           "YIYUN_LOG_LEVEL": "WARNING"}
    env.pop("YIYUN_REDIS_URL", None)
    if args.redis:
        env["YIYUN_REDIS_URL"] = args.redis
    subprocess.run([sys.executable, "-m", "yiyun.cli", "db", "upgrade"], env=env, cwd=REPO, check=True,
                   capture_output=True)
    asyncio.run(verify_bench_patients(url, work, args.open + args.waiting))
    try:
        with Server(env) as server:
            base = server.base
            t0 = time.perf_counter()
            consultations, doctor = asyncio.run(seed(base, args.open, args.waiting))
            print(f"[{backend}] seeded {args.open} open + {args.waiting} waiting consultations "
                  f"in {time.perf_counter() - t0:.0f} s", flush=True)
            chat = asyncio.run(chat_latency(base, consultations, args.rates, args.seconds))
            queue = asyncio.run(queue_latency(base, doctor, args.queue_requests))
            print(f"  queue: p50 {queue['p50_ms']} ms  p95 {queue['p95_ms']} ms "
                  f"({queue['waiting_in_queue']} waiting, {queue['active_of_doctor']} in progress)", flush=True)
            return {"chat": chat, "doctor_queue": queue}
    finally:
        drop_database(url)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--open", type=int, default=500)
    ap.add_argument("--waiting", type=int, default=100)
    ap.add_argument("--rates", default="10,25,50")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--queue-requests", type=int, default=200)
    ap.add_argument("--redis", default="", help="fan out through this Redis (as with several server processes)")
    args = ap.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    os.environ["YIYUN_SECRET_KEY"] = SECRET
    results = {"machine": machine_info(), "target": "chat p95 <= 100 ms with 500 open consultations",
               "server": "one uvicorn worker, same machine as the client",
               "fan_out": "redis" if args.redis else "in process",
               "params": {"open": args.open, "waiting": args.waiting, "seconds_per_rate": args.seconds,
                          "doctors": DOCTORS}, "backends": {}}
    for backend in args.backends.split(","):
        results["backends"][backend] = run_backend(backend, args)
    path = save_results("chat", results)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
