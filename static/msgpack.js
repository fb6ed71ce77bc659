// A msgpack decoder (https://github.com/msgpack/msgpack/blob/master/spec.md), enough for the
// streamgen WebSocket: maps, arrays, strings, raw bytes, numbers, nil/bool, ext (timestamps).
// `bin` values come back as Uint8Array views into the input (no copy). 64-bit integers beyond
// Number.MAX_SAFE_INTEGER come back as BigInt. No encoder: the client sends JSON text.

export class MsgpackError extends Error {
  constructor(message) {
    super(message);
    this.name = "MsgpackError";
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Decode one msgpack value that fills `input` (Uint8Array or ArrayBuffer) exactly. */
export function decode(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;

  function take(n) {
    if (pos + n > bytes.length) {
      throw new MsgpackError(`truncated: needs ${n} more bytes at offset ${pos} of ${bytes.length}`);
    }
    const at = pos;
    pos += n;
    return at;
  }
  const u8 = () => view.getUint8(take(1));
  const u16 = () => view.getUint16(take(2));
  const u32 = () => view.getUint32(take(4));
  const safe = (big) => (big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big);
  const raw = (n) => bytes.subarray(take(n), pos);
  const str = (n) => utf8.decode(raw(n));

  function array(n) {
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = value();
    return out;
  }

  function map(n) {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = value();
      const name = typeof key === "string" ? key : String(key);
      // A plain assignment to "__proto__" would set the prototype instead of a key.
      Object.defineProperty(out, name, { value: value(), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }

  function ext(n) {
    const type = view.getInt8(take(1));
    const data = raw(n);
    if (type !== -1) return { extType: type, data };
    const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (n === 4) return new Date(v.getUint32(0) * 1000);
    if (n === 8) {
      const hi = v.getUint32(0);
      const nanos = hi >>> 2;
      const seconds = (hi & 0x3) * 2 ** 32 + v.getUint32(4);
      return new Date(seconds * 1000 + nanos / 1e6);
    }
    if (n === 12) return new Date(Number(v.getBigInt64(4)) * 1000 + v.getUint32(0) / 1e6);
    throw new MsgpackError(`timestamp extension of ${n} bytes at offset ${pos - n}`);
  }

  function value() {
    const b = u8();
    if (b <= 0x7f) return b;
    if (b <= 0x8f) return map(b & 0x0f);
    if (b <= 0x9f) return array(b & 0x0f);
    if (b <= 0xbf) return str(b & 0x1f);
    if (b >= 0xe0) return b - 0x100;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return raw(u8());
      case 0xc5: return raw(u16());
      case 0xc6: return raw(u32());
      case 0xc7: return ext(u8());
      case 0xc8: return ext(u16());
      case 0xc9: return ext(u32());
      case 0xca: return view.getFloat32(take(4));
      case 0xcb: return view.getFloat64(take(8));
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: return safe(view.getBigUint64(take(8)));
      case 0xd0: return view.getInt8(take(1));
      case 0xd1: return view.getInt16(take(2));
      case 0xd2: return view.getInt32(take(4));
      case 0xd3: return safe(view.getBigInt64(take(8)));
      case 0xd4: return ext(1);
      case 0xd5: return ext(2);
      case 0xd6: return ext(4);
      case 0xd7: return ext(8);
      case 0xd8: return ext(16);
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return array(u16());
      case 0xdd: return array(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new MsgpackError(`invalid type byte 0x${b.toString(16)} at offset ${pos - 1}`);
    }
  }

  const result = value();
  if (pos !== bytes.length) {
    throw new MsgpackError(`${bytes.length - pos} trailing bytes after the value (offset ${pos})`);
  }
  return result;
}
