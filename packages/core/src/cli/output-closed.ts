/**
 * Whether the reader of stdout went away (`reasonplug … | head`): reasonplug.ts stops the command then as Ctrl-C
 * does, and a command that reads a stop as an interruption (exit code 130) tells the two apart by this.
 */
export const stdout = { closed: false };
