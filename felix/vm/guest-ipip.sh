#!/bin/sh
# Runs inside the qemu guest. Nodes n1 (192.0.2.11) and n2 (192.0.2.12) share a bridge; n3
# (198.51.100.13) is behind a router. Each node runs tabby-felix fed from an input file, and has
# one pod wired Calico style. Phase 1: IPIP Always. Phase 2: IPIP CrossSubnet (felix restarted
# with the new pool; it replaces its routes in place). Phase 3: IPIP Never: tunl0 loses its
# address and goes down, routes go direct (n3 through the router: a recursive next hop).
# busybox's shell runs its own applets before PATH: call iproute2 by its full path.
ip() { /bin/ip "$@"; }
FAIL=0
fail() { echo "CHECK FAILED: $*"; FAIL=1; }
for m in llc stp bridge tunnel4 ip_tunnel ipip veth; do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done

for ns in fab rtr n1 n2 n3 p1 p2 p3; do ip netns add $ns; ip -n $ns link set lo up; done
for seg in 0 1; do ip -n fab link add br$seg type bridge; ip -n fab link set br$seg up; done
ip link add r0 netns rtr type veth peer name rp0 netns fab
ip link add r1 netns rtr type veth peer name rp1 netns fab
ip -n rtr addr add 192.0.2.1/24 dev r0; ip -n rtr addr add 198.51.100.1/24 dev r1
ip -n rtr link set r0 up; ip -n rtr link set r1 up
ip -n fab link set rp0 master br0 up; ip -n fab link set rp1 master br1 up
ip netns exec rtr sysctl -qw net.ipv4.ip_forward=1

node() { # name addr/len gateway segment pod-ip
  n=$1; p=p${n#n}
  ip link add eth0 netns $n type veth peer name p$n netns fab
  ip -n fab link set p$n master br$4 up
  ip -n $n addr add $2 dev eth0; ip -n $n link set eth0 up
  ip -n $n route add default via $3 dev eth0
  ip link add cali${n}000000000 netns $n type veth peer name eth0 netns $p
  ip -n $n link set cali${n}000000000 address ee:ee:ee:ee:ee:ee up
  ip -n $p addr add $5/32 dev eth0; ip -n $p link set eth0 mtu 1400 up
  ip -n $p route add 169.254.1.1 dev eth0 scope link
  ip -n $p route add default via 169.254.1.1 dev eth0
}
node n1 192.0.2.11/24 192.0.2.1 0 198.18.0.10
node n2 192.0.2.12/24 192.0.2.1 0 198.18.0.74
node n3 198.51.100.13/24 198.51.100.1 1 198.18.0.138

inputs() { # mode node pod-ip -> felix input lines
  echo "pool default {\"cidr\":\"198.18.0.0/16\",\"ipipMode\":\"$1\"}"
  echo 'node n1 {"bgp":{"ipv4Address":"192.0.2.11/24","ipv4IPIPTunnelAddr":"198.18.0.1"}}'
  echo 'node n2 {"bgp":{"ipv4Address":"192.0.2.12/24","ipv4IPIPTunnelAddr":"198.18.0.65"}}'
  echo 'node n3 {"bgp":{"ipv4Address":"198.51.100.13/24","ipv4IPIPTunnelAddr":"198.18.0.129"}}'
  echo 'affinity a1 {"state":"confirmed","node":"n1","cidr":"198.18.0.0/26"}'
  echo 'affinity a2 {"state":"confirmed","node":"n2","cidr":"198.18.0.64/26"}'
  echo 'affinity a3 {"state":"confirmed","node":"n3","cidr":"198.18.0.128/26"}'
  echo "wep pod-$2 {\"node\":\"$2\",\"interfaceName\":\"cali${2}000000000\",\"ipNetworks\":[\"$3/32\"]}"
}
PIDS=""
start_felix() { # mode
  for p in $PIDS; do kill $p; wait $p 2>/dev/null; done; PIDS=""
  for spec in n1:198.18.0.10 n2:198.18.0.74 n3:198.18.0.138; do
    n=${spec%%:*}; inputs $1 $n ${spec#*:} > /tmp/in-$n.txt
    # Not through the ip() function: $! must be felix itself (ip netns exec execs it), not a
    # subshell, or the kill above would leave the old felix running to fight the new one.
    /bin/ip netns exec $n tabby-felix $n eth0 /tmp/in-$n.txt 5 > /tmp/felix-$n.log 2>&1 &
    PIDS="$PIDS $!"
  done
}
wait_route() { # node prefix pattern
  i=0
  while [ $i -lt 100 ]; do
    ip -n $1 route show $2 | grep -q "$3" && return 0
    sleep 0.2; i=$((i+1))
  done
  fail "$1: route $2 never matched '$3': $(ip -n $1 route show $2)"
}
capture_ping() { # capture-node from-pod to-ip -> /tmp/cap.txt
  ip netns exec $1 tcpdump -Z root -n -l -i eth0 'ip proto 4 or icmp' > /tmp/cap.txt 2>/dev/null &
  TD=$!; sleep 1.5
  ip netns exec $2 ping -c 3 -W 2 $3 > /tmp/ping.txt 2>&1 || fail "ping $2 -> $3: $(cat /tmp/ping.txt)"
  sleep 0.5; kill $TD; wait $TD 2>/dev/null
  echo "--- capture on $1 eth0 while $2 pinged $3:"; cat /tmp/cap.txt
}

echo "=== phase 1: IPIP Always"
start_felix Always
wait_route n1 198.18.0.64/26 "via 192.0.2.12 dev tunl0 proto 80 onlink"
wait_route n2 198.18.0.0/26 "via 192.0.2.11 dev tunl0 proto 80 onlink"
ip -n n1 route; ip -n n1 -d link show tunl0; ip -n n1 addr show tunl0
ip -n n1 -d link show tunl0 | grep -q "mtu 1480" || fail "tunl0 MTU"
ip -n n1 addr show tunl0 | grep -q "198.18.0.1/32" || fail "tunl0 address"
capture_ping n2 p1 198.18.0.74
grep -q 'IP 192.0.2.11 > 192.0.2.12: IP 198.18.0.10 > 198.18.0.74: ICMP echo request' /tmp/cap.txt \
  || fail "no IP-in-IP packet n1 -> n2 in Always mode"

echo "=== phase 2: IPIP CrossSubnet"
start_felix CrossSubnet
wait_route n1 198.18.0.64/26 "via 192.0.2.12 dev eth0 proto 80"
wait_route n1 198.18.0.128/26 "via 198.51.100.13 dev tunl0 proto 80 onlink"
wait_route n3 198.18.0.0/26 "via 192.0.2.11 dev tunl0 proto 80 onlink"
ip -n n1 route
capture_ping n2 p1 198.18.0.74
grep -q 'IP 198.18.0.10 > 198.18.0.74: ICMP echo request' /tmp/cap.txt \
  || fail "no direct packet n1 -> n2 inside the subnet"
grep -q 'proto 4\|IP 192.0.2.11 > 192.0.2.12: IP' /tmp/cap.txt \
  && fail "IP-in-IP inside the subnet in CrossSubnet mode"
capture_ping n3 p1 198.18.0.138
grep -q 'IP 192.0.2.11 > 198.51.100.13: IP 198.18.0.10 > 198.18.0.138: ICMP echo request' /tmp/cap.txt \
  || fail "no IP-in-IP packet n1 -> n3 across the router"

echo "=== phase 3: IPIP Never (tunl0 no longer needed)"
start_felix Never
# A node behind the router is reached through it (recursive next hop).
wait_route n1 198.18.0.128/26 "via 192.0.2.1 dev eth0 proto 80"
ip -n n1 route; ip -n n1 addr show tunl0
ip -n n1 addr show tunl0 | grep -q "inet " && fail "tunl0 still has an address"
ip -n n1 link show tunl0 | grep -q ",UP" && fail "tunl0 still up"
capture_ping n2 p1 198.18.0.74
grep -q 'IP 198.18.0.10 > 198.18.0.74: ICMP echo request' /tmp/cap.txt || fail "no direct packet n1 -> n2"

for p in $PIDS; do kill $p; done
echo "--- felix n1 log (tail):"; tail -n 5 /tmp/felix-n1.log
if [ $FAIL = 0 ]; then echo "FELIX-IPIP-RESULT: PASS"; else echo "FELIX-IPIP-RESULT: FAIL"; fi
