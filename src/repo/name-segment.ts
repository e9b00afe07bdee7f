/** A free-form name (a VM name) as one object-name segment: A-Z a-z 0-9 . - kept, every other byte as _hh. */
export function encodeSegment(s: string): string {
  const out = Buffer.from(s, 'utf8')
    .toString('latin1')
    .replace(/[^A-Za-z0-9.-]/g, (c) => `_${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  // '.', '..' and '.tmp-*' are reserved by the BlobStore naming rule.
  return out.startsWith('.') ? `_2e${out.slice(1)}` : out;
}

export function decodeSegment(s: string): string {
  return Buffer.from(s.replace(/_([0-9a-f]{2})/g, (_m, h) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8');
}
