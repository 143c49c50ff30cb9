/** Numbers and tables for people, shared by the screens (demo, stats). */

/** a/b to three decimals; 0 when b is 0. */
/** The median of some samples (the mean of the middle two for an even count; 0 for none). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? 0 : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function ratio(a: number, b: number): number {
  return b === 0 ? 0 : Math.round((a / b) * 1000) / 1000;
}

/**
 * Rows under a header, columns two spaces apart. "numbers": the first column left-aligned and the
 * rest right-aligned; "text": all left-aligned, the last column not padded.
 */
export function table(head: string[], rows: string[][], align: "numbers" | "text" = "numbers"): string[] {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const cell = (c: string, i: number, n: number): string => (align === "numbers" ? (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!)) : i === n - 1 ? c : c.padEnd(w[i]!));
  return [head, ...rows].map((r) => r.map((c, i) => cell(c, i, r.length)).join("  "));
}
