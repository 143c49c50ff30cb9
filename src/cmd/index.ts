/** The command table. */
import { buildCommand } from "./build.ts";
import type { Command } from "./command.ts";
import { flagsCommand } from "./flags.ts";
import { inspectCommand } from "./inspect.ts";
import { runCommand } from "./run.ts";

export const commands: Command[] = [buildCommand, flagsCommand, runCommand, inspectCommand];
