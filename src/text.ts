/** A client's own text echoed back (an unknown key, an unknown op) is cut short: errors must stay small. */
export function clip(text: string, max = 64): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
