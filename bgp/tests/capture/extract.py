# Splits a pcap of BGP sessions into messages: "time src -> dst type=T len=L HEX" per line.
import struct, sys
data = open(sys.argv[1], 'rb').read()
magic = struct.unpack('<I', data[:4])[0]
assert magic == 0xa1b2c3d4, hex(magic)
linktype = struct.unpack('<I', data[20:24])[0]
off = 24
flows = {}
while off < len(data):
    ts, tus, incl, orig = struct.unpack('<IIII', data[off:off+16]); off += 16
    pkt = data[off:off+incl]; off += incl
    if linktype == 1: pkt = pkt[14:]
    elif linktype == 113: pkt = pkt[16:]
    if pkt[0] >> 4 != 4: continue
    ihl = (pkt[0] & 15) * 4
    tot = struct.unpack('>H', pkt[2:4])[0]
    src = '.'.join(map(str, pkt[12:16])); dst = '.'.join(map(str, pkt[16:20]))
    tcp = pkt[ihl:tot]
    sp, dp, seq = struct.unpack('>HHI', tcp[:8])
    doff = (tcp[12] >> 4) * 4
    flags = tcp[13]
    payload = tcp[doff:]
    key = (src, sp, dst, dp)
    f = flows.setdefault(key, {'next': None, 'buf': b'', 'msgs': []})
    if flags & 2: f['next'] = seq + 1; continue
    if not payload: continue
    if f['next'] is None: f['next'] = seq
    if seq != f['next']: continue  # retransmit/out of order (not expected on lo)
    f['next'] = seq + len(payload)
    f['buf'] += payload
    while len(f['buf']) >= 19:
        l = struct.unpack('>H', f['buf'][16:18])[0]
        if len(f['buf']) < l: break
        m = f['buf'][:l]; f['buf'] = f['buf'][l:]
        print(f"{ts}.{tus:06d} {src}:{sp} -> {dst}:{dp} type={m[18]} len={l} {m.hex()}")
