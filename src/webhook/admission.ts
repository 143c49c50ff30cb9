/**
 * AdmissionReview v1: the wire types and the three answers a webhook gives — allowed, denied,
 * patched — as pure functions, in the shape of controller-runtime's webhook/admission package.
 */
import fastJsonPatch, { type Operation } from "fast-json-patch";

export const ADMISSION_API_VERSION = "admission.k8s.io/v1";

/** What the API server asks (only the fields this project reads are typed). */
export interface AdmissionRequest {
  uid: string;
  kind?: { group: string; version: string; kind: string };
  resource?: { group: string; version: string; resource: string };
  subResource?: string;
  name?: string;
  namespace?: string;
  operation?: "CREATE" | "UPDATE" | "DELETE" | "CONNECT";
  userInfo?: { username?: string; uid?: string; groups?: string[] };
  object?: unknown;
  oldObject?: unknown;
  dryRun?: boolean;
  options?: unknown;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: { code?: number; message?: string; reason?: string };
  /** base64 of a JSON Patch (RFC 6902) against the object of the request. */
  patch?: string;
  patchType?: "JSONPatch";
  warnings?: string[];
}

export interface AdmissionReview {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: "AdmissionReview";
  request?: AdmissionRequest;
  response?: AdmissionResponse;
}

/** One JSON Patch operation as fast-json-patch produces it. */
export type PatchOperation = Operation;

/** Let the object in as it is. */
export function allowed(uid: string, warnings?: string[]): AdmissionResponse {
  return { uid, allowed: true, ...warningsField(warnings) };
}

/** Refuse the request; the API server hands `message` to the client with HTTP status `code`. */
export function denied(uid: string, message: string, code = 422): AdmissionResponse {
  return { uid, allowed: false, status: { code, message, reason: code === 422 ? "Invalid" : "Forbidden" } };
}

/**
 * Let the object in as `mutated`: the difference to `original` as a JSON Patch. When nothing
 * changed the answer carries no patch at all (an empty patch would still count as a mutation
 * for reinvocation).
 */
export function patched(uid: string, original: unknown, mutated: unknown, warnings?: string[]): AdmissionResponse {
  const ops = jsonPatch(original, mutated);
  if (ops.length === 0) return allowed(uid, warnings);
  return {
    uid,
    allowed: true,
    patchType: "JSONPatch",
    patch: Buffer.from(JSON.stringify(ops)).toString("base64"),
    ...warningsField(warnings),
  };
}

/**
 * The JSON Patch that turns `original` into `mutated`. Keys are escaped as RFC 6901 asks
 * (`~` → `~0`, `/` → `~1`), so a label such as `classcache.dev/inject` stays one path segment.
 */
export function jsonPatch(original: unknown, mutated: unknown): PatchOperation[] {
  // compare() walks objects; a whole-document replacement of a non-object needs its own op.
  if (!isObjectLike(original) || !isObjectLike(mutated)) {
    return JSON.stringify(original) === JSON.stringify(mutated) ? [] : [{ op: "replace", path: "", value: mutated }];
  }
  // Through JSON first: an `undefined` field is no field, as on the wire.
  return fastJsonPatch.compare(plain(original), plain(mutated));
}

/** The AdmissionReview that answers `response`. */
export function reviewResponse(response: AdmissionResponse): AdmissionReview {
  return { apiVersion: ADMISSION_API_VERSION, kind: "AdmissionReview", response };
}

/** The request of a review body, or a reason why it is not one (the server answers 400). */
export function parseReview(body: unknown): { request: AdmissionRequest } | { error: string } {
  if (!isObjectLike(body) || Array.isArray(body)) return { error: "the body is not a JSON object" };
  const review = body as Partial<AdmissionReview>;
  if (review.kind !== "AdmissionReview") return { error: `kind is ${JSON.stringify(review.kind)}, expected "AdmissionReview"` };
  if (review.apiVersion !== ADMISSION_API_VERSION) {
    return { error: `apiVersion is ${JSON.stringify(review.apiVersion)}, expected "${ADMISSION_API_VERSION}" (admissionReviewVersions: [v1])` };
  }
  const request = review.request;
  if (!isObjectLike(request)) return { error: "the review has no request" };
  if (typeof request.uid !== "string" || request.uid === "") return { error: "request.uid is missing" };
  return { request };
}

function warningsField(warnings: string[] | undefined): { warnings?: string[] } {
  return warnings && warnings.length > 0 ? { warnings: [...warnings] } : {};
}

function plain(v: object): object {
  return JSON.parse(JSON.stringify(v)) as object;
}

function isObjectLike(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null;
}
