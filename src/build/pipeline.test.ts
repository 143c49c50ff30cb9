import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { userServerPort } from "./pipeline.ts";

const training = (readyUrl?: string, warmupUrls: string[] = []) => ({ readyUrl, readyLog: undefined, warmupUrls, timeoutMs: 1000 });

void describe("the port a Boot app is trained on", () => {
  void it("is server.port when the user set it, in options or arguments", () => {
    assert.equal(userServerPort({ appArgs: ["--server.port=9000"], jvmOptions: [], training: training("http://localhost:8080/health") }), 9000);
    assert.equal(userServerPort({ appArgs: [], jvmOptions: ["-Dserver.port=9001"], training: training() }), 9001);
  });
  void it("is the port of a training URL on this host, so http://localhost:8080/… is answered where it is asked", () => {
    assert.equal(userServerPort({ appArgs: [], jvmOptions: [], training: training("http://localhost:8080/actuator/health") }), 8080);
    assert.equal(userServerPort({ appArgs: [], jvmOptions: [], training: training("/actuator/health", ["http://127.0.0.1:8081/x"]) }), 8081);
  });
  void it("is ours to choose when nothing names one (a path, or a URL without a port)", () => {
    assert.equal(userServerPort({ appArgs: [], jvmOptions: [], training: training("/actuator/health") }), undefined);
    assert.equal(userServerPort({ appArgs: [], jvmOptions: [], training: training("http://localhost/actuator/health") }), undefined);
  });
});
