/**
 * A small namespace-aware XML reader for vim25 SOAP responses.
 *
 * Why not the `soap` package's own decoder: vim25 answers are full of polymorphic values
 * (`xsi:type="ArrayOfVirtualDevice"`), and servers choose their own prefix for the XML
 * Schema instance namespace (vcsim writes `XMLSchema-instance:type`). Here `xsi:type` is
 * found by namespace URI, never by prefix, and every value stays a string, so 64-bit
 * numbers are converted by the caller with a range check (see `int64`, `safeNumber`).
 */

export const XSI_NS = 'http://www.w3.org/2001/XMLSchema-instance';

export interface XNode {
  /** Local name. */
  name: string;
  /** Namespace URI ('' when none). */
  ns: string;
  /** Attributes by local name (namespaced ones also as `{uri}local`). */
  attrs: Record<string, string>;
  children: XNode[];
  text: string;
  /** Local part of xsi:type, resolved by namespace; undefined when absent. */
  xsiType?: string;
  /** Namespace URI of the xsi:type value. */
  xsiTypeNs?: string;
}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function decodeEntities(s: string): string {
  if (s.indexOf('&') < 0) return s;
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g, (all, e: string) => {
    if (e[0] === '#') {
      const cp = e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return String.fromCodePoint(cp);
    }
    return ENTITIES[e] ?? all;
  });
}

export class XmlError extends Error {}

/** Parses a whole document; returns the root element. */
export function parseXml(xml: string): XNode {
  type Frame = { node: XNode; nsmap: Map<string, string> };
  const stack: Frame[] = [];
  let root: XNode | undefined;
  let i = 0;
  const attrRe = /([^\s=/>]+)\s*=\s*("([^"]*)"|'([^']*)')/g;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    if (lt < 0) break;
    if (lt > i && stack.length) stack[stack.length - 1].node.text += decodeEntities(xml.slice(i, lt));
    if (xml.startsWith('<?', lt)) {
      i = xml.indexOf('?>', lt) + 2;
    } else if (xml.startsWith('<!--', lt)) {
      i = xml.indexOf('-->', lt) + 3;
    } else if (xml.startsWith('<![CDATA[', lt)) {
      const end = xml.indexOf(']]>', lt);
      if (stack.length) stack[stack.length - 1].node.text += xml.slice(lt + 9, end);
      i = end + 3;
    } else if (xml.startsWith('<!', lt)) {
      i = xml.indexOf('>', lt) + 1;
    } else if (xml[lt + 1] === '/') {
      const gt = xml.indexOf('>', lt);
      const f = stack.pop();
      if (!f) throw new XmlError('unbalanced end tag');
      i = gt + 1;
    } else {
      // start tag; find its end, honouring quotes
      let j = lt + 1;
      let q = '';
      for (; j < xml.length; j++) {
        const c = xml[j];
        if (q) {
          if (c === q) q = '';
        } else if (c === '"' || c === "'") q = c;
        else if (c === '>') break;
      }
      if (j >= xml.length) throw new XmlError('unterminated start tag');
      let body = xml.slice(lt + 1, j);
      const selfClosing = body.endsWith('/');
      if (selfClosing) body = body.slice(0, -1);
      const sp = body.search(/\s/);
      const qname = sp < 0 ? body : body.slice(0, sp);
      const rawAttrs: Array<[string, string]> = [];
      if (sp >= 0) {
        attrRe.lastIndex = 0;
        let m: RegExpExecArray | null;
        const rest = body.slice(sp);
        while ((m = attrRe.exec(rest))) rawAttrs.push([m[1], decodeEntities(m[3] ?? m[4] ?? '')]);
      }
      const parentMap = stack.length ? stack[stack.length - 1].nsmap : new Map<string, string>([['xml', 'http://www.w3.org/XML/1998/namespace']]);
      let nsmap = parentMap;
      for (const [k, v] of rawAttrs) {
        if (k === 'xmlns' || k.startsWith('xmlns:')) {
          if (nsmap === parentMap) nsmap = new Map(parentMap);
          nsmap.set(k === 'xmlns' ? '' : k.slice(6), v);
        }
      }
      const split = (qn: string, useDefault: boolean): [string, string] => {
        const c = qn.indexOf(':');
        if (c < 0) return [useDefault ? nsmap.get('') ?? '' : '', qn];
        const prefix = qn.slice(0, c);
        const uri = nsmap.get(prefix);
        if (uri === undefined) throw new XmlError(`undeclared namespace prefix ${prefix}`);
        return [uri, qn.slice(c + 1)];
      };
      const [ns, name] = split(qname, true);
      const node: XNode = { name, ns, attrs: {}, children: [], text: '' };
      for (const [k, v] of rawAttrs) {
        if (k === 'xmlns' || k.startsWith('xmlns:')) continue;
        const [ans, alocal] = split(k, false);
        node.attrs[alocal] = v;
        if (ans) node.attrs[`{${ans}}${alocal}`] = v;
        if (ans === XSI_NS && alocal === 'type') {
          // The value is a QName too; an undeclared prefix (seen in the wild) keeps the local part.
          const c = v.indexOf(':');
          node.xsiType = c < 0 ? v : v.slice(c + 1);
          node.xsiTypeNs = c < 0 ? nsmap.get('') ?? '' : nsmap.get(v.slice(0, c)) ?? '';
        }
      }
      if (stack.length) stack[stack.length - 1].node.children.push(node);
      else if (!root) root = node;
      if (!selfClosing) stack.push({ node, nsmap });
      i = j + 1;
    }
  }
  if (!root) throw new XmlError('no root element');
  if (stack.length) throw new XmlError(`unterminated element <${stack[stack.length - 1].node.name}>`);
  return root;
}

export function child(n: XNode | undefined, name: string): XNode | undefined {
  return n?.children.find((c) => c.name === name);
}

export function children(n: XNode | undefined, name: string): XNode[] {
  return n ? n.children.filter((c) => c.name === name) : [];
}

export function text(n: XNode | undefined): string | undefined {
  return n ? n.text.trim() : undefined;
}

/** Text of a child, or undefined. */
export function childText(n: XNode | undefined, name: string): string | undefined {
  return text(child(n, name));
}

/** Parses an xsd:long / xsd:int exactly. */
export function int64(s: string | undefined, what: string): bigint {
  if (s === undefined || !/^-?\d+$/.test(s.trim())) throw new XmlError(`${what}: expected an integer, got ${JSON.stringify(s)}`);
  return BigInt(s.trim());
}

/** Converts to a JS number only when exact (|n| <= 2^53 - 1); otherwise throws. */
export function safeNumber(v: bigint | string | undefined, what: string): number {
  const b = typeof v === 'bigint' ? v : int64(v, what);
  if (b > BigInt(Number.MAX_SAFE_INTEGER) || b < -BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`${what} = ${b} does not fit in a JS number without losing precision`);
  }
  return Number(b);
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}
