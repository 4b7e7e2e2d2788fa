/**
 * Text a registry sent (names, tags, versions, error messages), made safe to print: a terminal takes C0 and C1
 * control characters (ESC, BEL, CSI, …) as commands — to retitle the window, clear the screen, hide or fake output.
 */

const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** `text` with every C0 and C1 control character (and DEL) written as a `\u` escape, as JSON writes them. */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
