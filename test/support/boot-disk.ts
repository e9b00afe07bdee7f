/**
 * A tiny bootable disk for drills, generated without an assembler: a 512-byte BIOS
 * boot sector, written below as commented x86 real-mode machine code, that
 *
 *   1. reads a list of sectors spread over several 64 KiB chunks of the disk with
 *      BIOS int 13h AH=42h (extended read by LBA: works on IDE/AHCI, virtio-blk,
 *      virtio-scsi and NVMe under SeaBIOS),
 *   2. folds their bytes into a 16-bit checksum (add each little-endian word, then
 *      rotate left by one, so order and position matter),
 *   3. prints "PILOTLIGHT-DRILL sum=XXXX" on COM1 (port 0x3f8, polled), or
 *      "PILOTLIGHT-DRILL read error" when a read fails,
 *   4. and leaves through QEMU's isa-debug-exit device (port 0xf4).
 *
 * `expectedSum` computes the same checksum in TypeScript from the image, so a test
 * knows what a correct boot prints.
 */
import { promises as fsp } from 'node:fs';
import { Rng } from './images.js';

const ORG = 0x7c00;
/** Where each sector is read to. */
const BUFFER = 0x8000;
export const EXIT_OK = 0x10;
export const EXIT_READ_ERROR = 0x11;
export const MARKER = 'PILOTLIGHT-DRILL sum=';

type Fixup = { at: number; label: string; kind: 'rel8' | 'rel16' | 'abs16' };

/** Just enough of an assembler: raw opcode bytes, labels, and 8/16-bit references to them. */
class Asm {
  readonly out: number[] = [];
  private readonly labels = new Map<string, number>();
  private readonly fixups: Fixup[] = [];

  /** Raw bytes (opcodes and immediates). */
  b(...bytes: number[]): this {
    this.out.push(...bytes);
    return this;
  }
  label(name: string): this {
    this.labels.set(name, this.out.length);
    return this;
  }
  /** A 16-bit absolute address of a label (for mov si, imm16 and memory operands). */
  abs16(label: string): this {
    this.fixups.push({ at: this.out.length, label, kind: 'abs16' });
    return this.b(0, 0);
  }
  /** Opcode bytes followed by an 8-bit displacement to a label (short jumps, loop). */
  rel8(op: number[], label: string): this {
    this.b(...op);
    this.fixups.push({ at: this.out.length, label, kind: 'rel8' });
    return this.b(0);
  }
  /** Opcode bytes followed by a 16-bit displacement to a label (near call). */
  rel16(op: number[], label: string): this {
    this.b(...op);
    this.fixups.push({ at: this.out.length, label, kind: 'rel16' });
    return this.b(0, 0);
  }
  ascii(s: string): this {
    return this.b(...Buffer.from(s, 'latin1'));
  }
  u32(v: number): this {
    return this.b(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
  link(): Buffer {
    for (const f of this.fixups) {
      const target = this.labels.get(f.label);
      if (target === undefined) throw new Error(`boot-disk: no label ${f.label}`);
      if (f.kind === 'abs16') {
        const a = ORG + target;
        this.out[f.at] = a & 0xff;
        this.out[f.at + 1] = a >> 8;
      } else if (f.kind === 'rel8') {
        const d = target - (f.at + 1);
        if (d < -128 || d > 127) throw new Error(`boot-disk: short jump to ${f.label} out of range (${d})`);
        this.out[f.at] = d & 0xff;
      } else {
        const d = (target - (f.at + 2)) & 0xffff;
        this.out[f.at] = d & 0xff;
        this.out[f.at + 1] = d >> 8;
      }
    }
    return Buffer.from(this.out);
  }
}

/** The boot sector that reads `lbas` (at most ~40) and prints their checksum. */
export function bootSector(lbas: number[]): Buffer {
  const a = new Asm();
  a.b(0xfa); //                      cli
  a.b(0xfc); //                      cld                  ; lodsb counts upwards
  a.b(0x31, 0xc0); //                xor ax, ax
  a.b(0x8e, 0xd8); //                mov ds, ax
  a.b(0x8e, 0xc0); //                mov es, ax
  a.b(0x8e, 0xd0); //                mov ss, ax
  a.b(0xbc, 0x00, 0x7c); //          mov sp, 0x7c00
  a.b(0xfb); //                      sti
  a.b(0x88, 0x16).abs16('drive'); // mov [drive], dl      ; the BIOS passes the boot drive in dl
  a.b(0x31, 0xed); //                xor bp, bp           ; bp: the checksum
  a.b(0xbe).abs16('table'); //       mov si, table
  a.label('next');
  a.b(0x66, 0x8b, 0x04); //          mov eax, [si]
  a.b(0x66, 0x83, 0xf8, 0xff); //    cmp eax, -1          ; end of the table
  a.rel8([0x74], 'done'); //         je done
  a.b(0x66, 0xa3).abs16('dap_lba'); // mov [dap_lba], eax
  a.b(0x56); //                      push si
  a.b(0xbe).abs16('dap'); //         mov si, dap          ; disk address packet
  a.b(0xb4, 0x42); //                mov ah, 0x42         ; extended read
  a.b(0x8a, 0x16).abs16('drive'); // mov dl, [drive]
  a.b(0xcd, 0x13); //                int 0x13
  a.b(0x5e); //                      pop si
  a.rel8([0x72], 'error'); //        jc error
  a.b(0xbf, BUFFER & 0xff, BUFFER >> 8); // mov di, BUFFER
  a.b(0xb9, 0x00, 0x01); //          mov cx, 256          ; words per sector
  a.label('sum');
  a.b(0x03, 0x2d); //                add bp, [di]
  a.b(0xd1, 0xc5); //                rol bp, 1
  a.b(0x47, 0x47); //                inc di; inc di
  a.rel8([0xe2], 'sum'); //          loop sum
  a.b(0x83, 0xc6, 0x04); //          add si, 4
  a.rel8([0xeb], 'next'); //         jmp next
  a.label('done');
  a.b(0xbe).abs16('msg'); //         mov si, msg
  a.rel16([0xe8], 'puts'); //        call puts
  a.b(0x89, 0xe8); //                mov ax, bp
  a.rel16([0xe8], 'hex16'); //       call hex16
  a.b(0xbe).abs16('crlf'); //        mov si, crlf
  a.rel16([0xe8], 'puts'); //        call puts
  a.b(0xb0, EXIT_OK); //             mov al, EXIT_OK
  a.b(0xe6, 0xf4); //                out 0xf4, al         ; isa-debug-exit: qemu exits (EXIT_OK*2+1)
  a.label('hang');
  a.b(0xf4); //                      hlt
  a.rel8([0xeb], 'hang'); //         jmp hang
  a.label('error');
  a.b(0xbe).abs16('errmsg'); //      mov si, errmsg
  a.rel16([0xe8], 'puts'); //        call puts
  a.b(0xb0, EXIT_READ_ERROR); //     mov al, EXIT_READ_ERROR
  a.b(0xe6, 0xf4); //                out 0xf4, al
  a.rel8([0xeb], 'hang'); //         jmp hang
  // puts: prints the NUL-terminated string at si
  a.label('puts');
  a.b(0xac); //                      lodsb
  a.b(0x84, 0xc0); //                test al, al
  a.rel8([0x74], 'puts_end'); //     jz puts_end
  a.rel16([0xe8], 'putc'); //        call putc
  a.rel8([0xeb], 'puts'); //         jmp puts
  a.label('puts_end');
  a.b(0xc3); //                      ret
  // putc: sends al to COM1 once its transmit register is empty
  a.label('putc');
  a.b(0x50); //                      push ax
  a.b(0xba, 0xfd, 0x03); //          mov dx, 0x3fd        ; line status register
  a.label('putc_wait');
  a.b(0xec); //                      in al, dx
  a.b(0xa8, 0x20); //                test al, 0x20        ; THR empty
  a.rel8([0x74], 'putc_wait'); //    jz putc_wait
  a.b(0x58); //                      pop ax
  a.b(0xba, 0xf8, 0x03); //          mov dx, 0x3f8        ; transmit register
  a.b(0xee); //                      out dx, al
  a.b(0xc3); //                      ret
  // hex16: prints ax as 4 upper-case hex digits
  a.label('hex16');
  a.b(0xb9, 0x04, 0x00); //          mov cx, 4
  a.label('hex_loop');
  a.b(0xc1, 0xc0, 0x04); //          rol ax, 4
  a.b(0x50); //                      push ax
  a.b(0x24, 0x0f); //                and al, 0x0f
  a.b(0x04, 0x30); //                add al, '0'
  a.b(0x3c, 0x39); //                cmp al, '9'
  a.rel8([0x76], 'hex_put'); //      jbe hex_put
  a.b(0x04, 0x07); //                add al, 7            ; 'A'..'F'
  a.label('hex_put');
  a.rel16([0xe8], 'putc'); //        call putc
  a.b(0x58); //                      pop ax
  a.rel8([0xe2], 'hex_loop'); //     loop hex_loop
  a.b(0xc3); //                      ret
  // data
  a.label('drive').b(0);
  a.label('dap').b(0x10, 0x00); //   packet size 16, reserved
  a.b(0x01, 0x00); //                sectors: 1
  a.b(BUFFER & 0xff, BUFFER >> 8, 0x00, 0x00); // buffer offset:segment = BUFFER:0
  a.label('dap_lba').u32(0).u32(0); // 64-bit LBA
  a.label('msg').ascii(MARKER).b(0);
  a.label('crlf').ascii('\r\n').b(0);
  a.label('errmsg').ascii('PILOTLIGHT-DRILL read error\r\n').b(0);
  a.label('table');
  for (const l of lbas) a.u32(l);
  a.u32(0xffffffff);
  const code = a.link();
  if (code.length > 510) throw new Error(`boot sector code is ${code.length} bytes, more than 510`);
  const sector = Buffer.alloc(512);
  code.copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

/** The checksum the boot sector prints, computed from the sectors' bytes. */
export function expectedSum(sectors: Buffer[]): string {
  let bp = 0;
  for (const s of sectors) {
    for (let o = 0; o < 512; o += 2) {
      bp = (bp + s.readUInt16LE(o)) & 0xffff;
      bp = ((bp << 1) | (bp >> 15)) & 0xffff;
    }
  }
  return bp.toString(16).toUpperCase().padStart(4, '0');
}

export interface BootDisk {
  /** LBAs the boot sector reads (512-byte sectors). */
  lbas: number[];
  /** What it prints on success: `PILOTLIGHT-DRILL sum=XXXX`. */
  marker: string;
}

/**
 * Writes a sparse disk image of `size` bytes: the boot sector, and random sectors
 * at the given LBAs (spread over several chunks by default), nothing elsewhere.
 */
export async function makeBootDisk(file: string, size = 16 * 1024 * 1024, lbas = [129, 1000, 4097, 9000, 20000, 32767], seed = 7): Promise<BootDisk> {
  const rng = new Rng(seed);
  const sectors = lbas.map(() => rng.bytes(512));
  const fh = await fsp.open(file, 'w');
  try {
    await fh.truncate(size);
    await fh.write(bootSector(lbas), 0, 512, 0);
    for (let i = 0; i < lbas.length; i++) {
      if ((lbas[i]! + 1) * 512 > size) throw new Error(`LBA ${lbas[i]} is past the end of a ${size}-byte disk`);
      await fh.write(sectors[i]!, 0, 512, lbas[i]! * 512);
    }
  } finally {
    await fh.close();
  }
  return { lbas, marker: `${MARKER}${expectedSum(sectors)}` };
}
