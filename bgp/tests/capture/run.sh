#!/bin/bash
# Captures the BGP exchanges behind bgp/tests/vectors.rs: BIRD 2.0.12 and GoBGP 3.10.0
# (Debian 12: apt-get install bird2 gobgpd tcpdump; stop the packaged bird first) peering on
# loopback addresses only, recorded with tcpdump, split into messages by extract.py.
# Usage: ./run.sh  (as root; writes msgs.txt beside this script, scratch files in $WORK)
set -x
here=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/cap}
mkdir -p "$WORK" && cp "$here/bird.conf" "$here/gobgpd.toml" "$WORK/"
cd "$WORK"
rm -f bgp.pcap bird.log
tcpdump -i lo -s 0 -U -w bgp.pcap 'tcp port 1790 or tcp port 1791' > tcpdump.log 2>&1 & echo $! > tcpdump.pid
sleep 1
gobgpd -f gobgpd.toml --api-hosts 127.0.0.1:50051 > gobgpd.log 2>&1 & echo $! > gobgpd.pid
sleep 2
bird -c bird.conf -s bird.ctl -P bird.pid
sleep 8
gobgp global rib add 198.18.1.0/24 community 65001:200 large-community 65001:3:4 med 10 local-pref 300 nexthop 203.0.113.3
gobgp global rib add 198.18.2.0/24 aspath 65100,4200000005 nexthop 203.0.113.3
gobgp global rib -a ipv6 add 2001:db8:200::/48 nexthop 2001:db8::3
sleep 3
gobgp neighbor 127.0.0.2 softresetin
sleep 1
birdc -s bird.ctl reload in peer_ibgp
sleep 2
gobgp global rib del 198.18.1.0/24
sleep 2
gobgp global rib -a ipv6 del 2001:db8:200::/48
sleep 2
birdc -s bird.ctl disable s6
sleep 2
birdc -s bird.ctl disable s4
sleep 2
birdc -s bird.ctl disable peer_ibgp '"maintenance"'
sleep 2
gobgp neighbor
birdc -s bird.ctl show protocols
kill "$(cat bird.pid)" "$(cat gobgpd.pid)"; sleep 1; kill "$(cat tcpdump.pid)"; sleep 1
python3 "$here/extract.py" bgp.pcap > "$here/msgs.txt"
