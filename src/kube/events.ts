/**
 * Records events.k8s.io/v1 Events about objects (what `kubectl describe` and `kubectl events`
 * show). Best effort, as in client-go: a failure is logged, never thrown, because an event must
 * not fail a reconcile.
 */
import { randomBytes } from "node:crypto";
import type { Logger } from "../runtime/log.ts";
import type { KubeClient } from "./client.ts";
import { microTime, type Event, type KubeObject } from "./types.ts";

export interface EventRecorderOptions {
  client: Pick<KubeClient, "createEvent">;
  /** Who reports, e.g. "classcache.dev/operator". */
  reportingController: string;
  /** Which instance, e.g. the Pod name. */
  reportingInstance: string;
  logger: Logger;
  now?: () => number;
}

export type EventType = "Normal" | "Warning";

export class EventRecorder {
  readonly #opts: EventRecorderOptions;

  constructor(opts: EventRecorderOptions) {
    this.#opts = opts;
  }

  /**
   * `reason` is a short CamelCase word ("ArchiveBuilt"), `action` what was done or tried
   * ("Build"), `note` a sentence for people (at most 1 kB).
   * Resolves with the created Event, or undefined when it could not be recorded.
   */
  async record(regarding: KubeObject, type: EventType, reason: string, action: string, note: string): Promise<Event | undefined> {
    const meta = regarding.metadata;
    const event: Event = {
      apiVersion: "events.k8s.io/v1",
      kind: "Event",
      metadata: {
        // Unique per occurrence, like client-go's "<name>.<hex>".
        name: `${meta.name ?? "object"}.${randomBytes(8).toString("hex")}`,
        namespace: meta.namespace ?? "default",
      },
      eventTime: microTime((this.#opts.now ?? Date.now)()),
      reportingController: this.#opts.reportingController,
      reportingInstance: this.#opts.reportingInstance,
      action,
      reason,
      type,
      note: note.length > 1024 ? `${note.slice(0, 1021)}...` : note,
      regarding: {
        ...(regarding.apiVersion === undefined ? {} : { apiVersion: regarding.apiVersion }),
        ...(regarding.kind === undefined ? {} : { kind: regarding.kind }),
        ...(meta.namespace === undefined ? {} : { namespace: meta.namespace }),
        ...(meta.name === undefined ? {} : { name: meta.name }),
        ...(meta.uid === undefined ? {} : { uid: meta.uid }),
        ...(meta.resourceVersion === undefined ? {} : { resourceVersion: meta.resourceVersion }),
      },
    };
    try {
      return await this.#opts.client.createEvent(event);
    } catch (err) {
      this.#opts.logger.warn("cannot record event", {
        reason,
        regarding: `${regarding.kind ?? "?"}/${meta.namespace ?? ""}/${meta.name ?? ""}`,
        error: (err as Error).message,
      });
      return undefined;
    }
  }
}
