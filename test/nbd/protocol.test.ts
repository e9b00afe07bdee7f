/**
 * The NBD protocol module: byte layouts checked against the wire format the NBD
 * protocol document gives (fixed offsets, magics spelled out in hex), round trips of
 * every encoder through its decoder, and the refusals a peer's bad bytes must get.
 * The server and client tests (serve-nbd.test.ts) check the same module against the
 * real Debian clients.
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { ByteReader, EndOfStreamError } from '../../src/nbd/byte-reader.js';
import * as P from '../../src/nbd/protocol.js';

const hex = (b: Buffer) => b.toString('hex');

describe('nbd protocol: handshake', () => {
  it('greeting is NBDMAGIC IHAVEOPT flags, and decodes back', () => {
    const g = P.encodeServerGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
    assert.equal(hex(g), Buffer.from('NBDMAGIC').toString('hex') + Buffer.from('IHAVEOPT').toString('hex') + '0003');
    assert.deepEqual(P.decodeServerGreeting(g), { handshakeFlags: 3 });
  });

  it('refuses oldstyle and foreign greetings', () => {
    const old = Buffer.alloc(18);
    old.writeBigUInt64BE(P.NBDMAGIC, 0);
    old.writeBigUInt64BE(P.OLDSTYLE_MAGIC, 8);
    assert.throws(() => P.decodeServerGreeting(old), /oldstyle/);
    assert.throws(() => P.decodeServerGreeting(Buffer.alloc(18)), /not an NBD server/);
    assert.throws(() => P.decodeServerGreeting(Buffer.alloc(17)), P.NbdProtocolError);
  });

  it('client flags are 32 bits big endian', () => {
    const b = P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
    assert.equal(hex(b), '00000003');
    assert.equal(P.decodeClientFlags(b), 3);
  });

  it('option: IHAVEOPT, option, length, data', () => {
    const o = P.encodeOption(P.NBD_OPT_GO, Buffer.from('ab'));
    assert.equal(hex(o), '49484156454f5054' + '00000007' + '00000002' + '6162');
    assert.deepEqual(P.decodeOptionHeader(o.subarray(0, 16)), { option: 7, length: 2 });
    const bad = Buffer.from(o.subarray(0, 16));
    bad[0] = 0;
    assert.throws(() => P.decodeOptionHeader(bad), /IHAVEOPT/);
  });

  it('INFO/GO data round trip, with its exact layout', () => {
    const d = P.encodeInfoRequest({ name: 'disk0', requests: [P.NBD_INFO_NAME, P.NBD_INFO_BLOCK_SIZE] });
    assert.equal(hex(d), '00000005' + Buffer.from('disk0').toString('hex') + '0002' + '0001' + '0003');
    assert.deepEqual(P.decodeInfoRequest(d), { name: 'disk0', requests: [1, 3] });
    assert.throws(() => P.decodeInfoRequest(Buffer.concat([d, Buffer.from([0])])), P.NbdProtocolError);
    assert.throws(() => P.decodeInfoRequest(d.subarray(0, d.length - 1)), P.NbdProtocolError);
  });

  it('meta context request round trip, with its exact layout', () => {
    const r = { name: 'e', queries: ['base:allocation', 'qemu:dirty-bitmap:b0'] };
    const d = P.encodeMetaContextRequest(r);
    assert.equal(d.readUInt32BE(0), 1);
    assert.equal(d.toString('utf8', 4, 5), 'e');
    assert.equal(d.readUInt32BE(5), 2);
    assert.equal(d.readUInt32BE(9), 15);
    assert.deepEqual(P.decodeMetaContextRequest(d), r);
    assert.deepEqual(P.decodeMetaContextRequest(P.encodeMetaContextRequest({ name: '', queries: [] })), { name: '', queries: [] });
    assert.throws(() => P.decodeMetaContextRequest(d.subarray(0, d.length - 2)), P.NbdProtocolError);
  });

  it('refuses strings over 4096 bytes and with NUL', () => {
    assert.throws(() => P.encodeInfoRequest({ name: 'x'.repeat(4097), requests: [] }), /limit/);
    assert.throws(() => P.encodeInfoRequest({ name: 'a\0b', requests: [] }), /NUL/);
    const huge = Buffer.alloc(8);
    huge.writeUInt32BE(5000, 0);
    assert.throws(() => P.decodeInfoRequest(huge), /limit/);
  });
});

describe('nbd protocol: option replies', () => {
  it('header: REPLY_MAGIC option type length', () => {
    const r = P.encodeOptionReply(P.NBD_OPT_LIST, P.NBD_REP_SERVER, P.encodeServerReplyData('0', 'disk sda'));
    assert.equal(hex(r.subarray(0, 20)), '0003e889045565a9' + '00000003' + '00000002' + '0000000d');
    assert.deepEqual(P.decodeOptionReplyHeader(r.subarray(0, 20)), { option: 3, type: 2, length: 13 });
    assert.deepEqual(P.decodeServerReplyData(r.subarray(20)), { name: '0', description: 'disk sda' });
  });

  it('error replies have bit 31 and carry a message', () => {
    const e = P.encodeOptionError(P.NBD_OPT_GO, P.NBD_REP_ERR_UNKNOWN, 'no such export');
    const h = P.decodeOptionReplyHeader(e.subarray(0, 20));
    assert.equal(h.type, 0x80000006);
    assert.ok(P.isOptionReplyError(h.type));
    assert.ok(!P.isOptionReplyError(P.NBD_REP_ACK));
    assert.equal(e.toString('utf8', 20), 'no such export');
    assert.throws(() => P.encodeOptionError(1, P.NBD_REP_ACK, 'x'), /not an error/);
  });

  it('meta context reply: id then name', () => {
    const d = P.encodeMetaContextReplyData(1, P.BASE_ALLOCATION);
    assert.equal(hex(d.subarray(0, 4)), '00000001');
    assert.deepEqual(P.decodeMetaContextReplyData(d), { id: 1, name: 'base:allocation' });
  });

  it('NBD_REP_INFO payloads round trip', () => {
    const infos: P.Info[] = [
      { type: P.NBD_INFO_EXPORT, size: 5 * 2 ** 40 + 512, transmissionFlags: P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_READ_ONLY },
      { type: P.NBD_INFO_NAME, name: 'sda' },
      { type: P.NBD_INFO_DESCRIPTION, description: 'vm1 disk 0' },
      { type: P.NBD_INFO_BLOCK_SIZE, minimum: 1, preferred: 65536, maximum: 32 << 20 },
      { type: 77, raw: Buffer.from([1, 2]) },
    ];
    for (const i of infos) assert.deepEqual(P.decodeInfo(P.encodeInfo(i)), i);
    const exp = P.encodeInfo(infos[0]!);
    assert.equal(hex(exp), '0000' + '0000050000000200' + '0003');
    assert.throws(() => P.decodeInfo(exp.subarray(0, 8)), P.NbdProtocolError);
  });

  it('EXPORT_NAME reply: size, flags, 124 zeros unless NO_ZEROES', () => {
    assert.equal(P.encodeExportNameReply(1024, 3, false).length, 134);
    const r = P.encodeExportNameReply(1024, 3, true);
    assert.equal(hex(r), '0000000000000400' + '0003');
    assert.deepEqual(P.decodeExportNameReply(r), { size: 1024, transmissionFlags: 3 });
  });
});

describe('nbd protocol: transmission', () => {
  it('request: 28 bytes, magic flags type cookie offset length', () => {
    const r = { flags: P.NBD_CMD_FLAG_REQ_ONE, type: P.NBD_CMD_BLOCK_STATUS, cookie: 0x0102030405060708n, offset: 2 ** 33, length: 65536 };
    const b = P.encodeRequest(r);
    assert.equal(hex(b), '25609513' + '0008' + '0007' + '0102030405060708' + '0000000200000000' + '00010000');
    assert.deepEqual(P.decodeRequest(b), r);
    const bad = Buffer.from(b);
    bad[3] = 0;
    assert.throws(() => P.decodeRequest(bad), /magic/);
    const far = Buffer.from(b);
    far.writeBigUInt64BE(2n ** 63n, 16);
    assert.throws(() => P.decodeRequest(far), /too large/);
  });

  it('simple reply: 16 bytes, decoded through the magic dispatch', () => {
    const b = P.encodeSimpleReply(9n, P.NBD_EIO);
    assert.equal(hex(b), '67446698' + '00000005' + '0000000000000009');
    assert.equal(P.replyHeaderBytes(b.subarray(0, 4)), 16);
    assert.deepEqual(P.decodeReplyHeader(b), { kind: 'simple', cookie: 9n, error: 5 });
  });

  it('structured chunks: OFFSET_DATA, OFFSET_HOLE, BLOCK_STATUS, ERROR, ERROR_OFFSET, NONE', () => {
    const data = P.encodeOffsetDataChunk(7n, 0, 4096, Buffer.from('hello'));
    assert.equal(hex(data.subarray(0, 20)), '668e33ef' + '0000' + '0001' + '0000000000000007' + '0000000d');
    assert.equal(P.replyHeaderBytes(data.subarray(0, 4)), 20);
    const h = P.decodeReplyHeader(data.subarray(0, 20));
    assert.deepEqual(h, { kind: 'structured', flags: 0, type: 1, cookie: 7n, length: 13 });
    const od = P.decodeOffsetData(data.subarray(20));
    assert.equal(od.offset, 4096);
    assert.equal(od.data.toString(), 'hello');

    const hole = P.encodeOffsetHoleChunk(7n, P.NBD_REPLY_FLAG_DONE, 8192, 65536);
    assert.equal(hex(hole.subarray(4, 8)), '0001' + '0002');
    assert.deepEqual(P.decodeOffsetHole(hole.subarray(20)), { offset: 8192, length: 65536 });

    const extents = [
      { length: 65536, flags: 0 },
      { length: 131072, flags: P.NBD_STATE_HOLE | P.NBD_STATE_ZERO },
    ];
    const bs = P.encodeBlockStatusChunk(3n, P.NBD_REPLY_FLAG_DONE, 1, extents);
    assert.equal(hex(bs.subarray(20)), '00000001' + '00010000' + '00000000' + '00020000' + '00000003');
    assert.equal(P.decodeReplyHeader(bs.subarray(0, 20)).kind, 'structured');
    assert.deepEqual(P.decodeBlockStatus(bs.subarray(20)), { contextId: 1, extents });
    assert.throws(() => P.decodeBlockStatus(bs.subarray(20, 30)), P.NbdProtocolError);

    const err = P.encodeErrorChunk(3n, P.NBD_REPLY_FLAG_DONE, P.NBD_EIO, 'bad chunk');
    assert.equal(hex(err.subarray(6, 8)), '8001');
    assert.ok(P.isReplyTypeError(P.NBD_REPLY_TYPE_ERROR));
    assert.ok(!P.isReplyTypeError(P.NBD_REPLY_TYPE_OFFSET_DATA));
    assert.deepEqual(P.decodeError(err.subarray(20), P.NBD_REPLY_TYPE_ERROR), { error: 5, message: 'bad chunk' });
    const eo = P.encodeErrorChunk(3n, 0, P.NBD_EIO, 'x', 65536);
    assert.equal(eo.readUInt16BE(6), P.NBD_REPLY_TYPE_ERROR_OFFSET);
    assert.deepEqual(P.decodeError(eo.subarray(20), P.NBD_REPLY_TYPE_ERROR_OFFSET), { error: 5, message: 'x', offset: 65536 });

    const none = P.encodeNoneChunk(3n);
    assert.deepEqual(P.decodeReplyHeader(none), { kind: 'structured', flags: 1, type: 0, cookie: 3n, length: 0 });
  });

  it('refuses a reply with an unknown magic', () => {
    assert.throws(() => P.replyHeaderBytes(Buffer.from('dead', 'hex').subarray(0, 2)), P.NbdProtocolError);
    assert.throws(() => P.decodeReplyHeader(Buffer.alloc(16)), /bad reply magic/);
  });

  it('names the error values', () => {
    assert.equal(P.errorName(P.NBD_EIO), 'EIO');
    assert.equal(P.errorName(P.NBD_EPERM), 'EPERM');
    assert.equal(P.errorName(P.NBD_EINVAL), 'EINVAL');
    assert.equal(P.errorName(P.NBD_ENOSPC), 'ENOSPC');
    assert.equal(P.errorName(P.NBD_EOVERFLOW), 'EOVERFLOW');
    assert.equal(P.errorName(P.NBD_ESHUTDOWN), 'ESHUTDOWN');
    assert.equal(P.errorName(99), 'error 99');
  });
});

describe('nbd byte reader', () => {
  it('reassembles exact reads across chunk boundaries and reports a short end', async () => {
    const s = new PassThrough();
    const r = new ByteReader(s, 8);
    const first = r.read(5);
    s.write(Buffer.from('ab'));
    s.write(Buffer.from('cdefghijklmnop'));
    assert.equal((await first).toString(), 'abcde');
    assert.equal((await r.read(3)).toString(), 'fgh');
    assert.equal((await r.read(8)).toString(), 'ijklmnop');
    const last = r.read(4);
    s.end(Buffer.from('xy'));
    await assert.rejects(last, (e: Error) => e instanceof EndOfStreamError && /after 2 of 4/.test(e.message));
  });

  it('reads larger than its high-water mark', async () => {
    const s = new PassThrough();
    const r = new ByteReader(s, 16);
    const big = Buffer.alloc(1000, 7);
    const p = r.read(1000);
    for (let i = 0; i < 1000; i += 10) s.write(big.subarray(i, i + 10));
    assert.ok((await p).equals(big));
  });
});
