/** The command table. */
import { buildCommand } from "./build.ts";
import type { Command } from "./command.ts";
import { flagsCommand } from "./flags.ts";
import { inspectCommand } from "./inspect.ts";
import { runCommand } from "./run.ts";
import { nodeCommand } from "./node.ts";
import { demoCommand } from "./demo.ts";
import { podInitCommand } from "./podinit.ts";
import { operatorCommand } from "./operator.ts";
import { statsCommand, topCommand } from "./stats.ts";
import { keysCommand } from "./keys.ts";

export const commands: Command[] = [buildCommand, flagsCommand, runCommand, inspectCommand, nodeCommand, podInitCommand, operatorCommand, statsCommand, topCommand, keysCommand, demoCommand];
