/** Plain HTTPS requests to the test kube-apiserver, verified against its CA. */
import { request } from "node:https";

export interface ApiTarget {
  server: string;
  caPem: string;
  token: string;
}

export interface ApiRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: unknown;
  timeoutMs?: number;
}

export interface ApiResponse {
  status: number;
  body: string;
}

/** Sends one request with the target's bearer token; `path` is relative to the server (e.g. "/version"). */
export function apiRequest(target: ApiTarget, path: string, req: ApiRequest = {}): Promise<ApiResponse> {
  const url = new URL(path, target.server);
  const payload = req.body === undefined ? undefined : JSON.stringify(req.body);
  const headers: Record<string, string> = {
    Accept: "application/json",
    Authorization: `Bearer ${target.token}`,
    ...(payload === undefined ? {} : { "Content-Type": "application/json" }),
    ...req.headers,
  };
  return new Promise((resolve, reject) => {
    const r = request(
      url,
      { method: req.method ?? "GET", headers, ca: target.caPem, timeout: req.timeoutMs ?? 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    r.on("timeout", () => r.destroy(new Error(`${req.method ?? "GET"} ${url.href} timed out`)));
    r.on("error", reject);
    r.end(payload);
  });
}
