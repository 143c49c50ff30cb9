import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Counter, Registry } from "prom-client";
import { discardLogger } from "./log.ts";
import { HealthServer } from "./health.ts";

void describe("HealthServer", () => {
  void it("answers /healthz and /readyz with one line per check and 500 when one fails", async () => {
    let synced = false;
    const server = new HealthServer({ port: 0, host: "127.0.0.1", logger: discardLogger })
      .addHealthCheck("ping", () => {})
      .addReadyCheck("informers", () => synced)
      .addReadyCheck("leader-or-follower", () => Promise.resolve(true));
    const ctl = new AbortController();
    const done = server.start(ctl.signal);
    const base = `http://127.0.0.1:${await server.listening()}`;
    const get = async (path: string): Promise<[number, string]> => {
      const res = await fetch(base + path);
      return [res.status, await res.text()];
    };

    assert.deepEqual(await get("/healthz"), [200, "[+]ping ok\nhealthz ok\n"]);
    const [status, body] = await get("/readyz");
    assert.equal(status, 500);
    assert.match(body, /^\[-\]informers failed: not ready$/m);
    assert.match(body, /^\[\+\]leader-or-follower ok$/m);
    synced = true;
    assert.equal((await get("/readyz"))[0], 200);
    assert.equal((await get("/metrics"))[0], 404);

    ctl.abort();
    await done;
    await assert.rejects(fetch(base + "/healthz"));
  });

  void it("serves the registry's metrics as Prometheus text", async () => {
    const registry = new Registry();
    new Counter({ name: "things_total", help: "Things.", registers: [registry] }).inc(3);
    const server = new HealthServer({ port: 0, host: "127.0.0.1", logger: discardLogger, metrics: registry });
    const ctl = new AbortController();
    const done = server.start(ctl.signal);
    const res = await fetch(`http://127.0.0.1:${await server.listening()}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    assert.match(await res.text(), /^things_total 3$/m);
    ctl.abort();
    await done;
  });
});
