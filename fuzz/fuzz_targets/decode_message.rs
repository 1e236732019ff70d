//! Fuzz target for `bgp::packet::Message::decode`: no input may panic; every error maps to a
//! NOTIFICATION that encodes and decodes; whatever decodes re-encodes to bytes that decode
//! again and re-encode identically. Seed the corpus from the captured vectors:
//!
//! ```text
//! mkdir -p corpus/decode_message
//! awk '{print $NF}' ../bgp/tests/capture/msgs.txt | while read h; do
//!   echo "$h" | xxd -r -p > corpus/decode_message/$(echo "$h" | sha1sum | cut -c1-16); done
//! cargo +nightly fuzz run decode_message
//! ```
//! The first input octet picks the session context, the rest is the message.
#![no_main]

use bgp::packet::{AfiSafi, DecodeContext, EncodeContext, Message, Notification};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, buf)) = data.split_first() else {
        return;
    };
    let ctx = DecodeContext {
        four_octet_asn: sel & 1 != 0,
        extended_messages: sel & 2 != 0,
        families: if sel & 4 != 0 {
            vec![AfiSafi::IPV4_UNICAST]
        } else {
            vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]
        },
    };
    let _ = bgp::packet::frame_len(buf, &ctx);
    match Message::decode(buf, &ctx) {
        Err(e) => {
            let n = Notification::from(&e);
            let wire = Message::Notification(n.clone()).encode(&EncodeContext::default());
            assert_eq!(
                Message::decode(&wire, &DecodeContext::default()),
                Ok(Message::Notification(n))
            );
        }
        Ok(m) => {
            let wide = DecodeContext {
                extended_messages: true,
                ..ctx
            };
            let enc = EncodeContext::from(&wide);
            let bytes = m.encode(&enc);
            let again = Message::decode(&bytes, &wide).expect("re-encoded message decodes");
            assert_eq!(again.encode(&enc), bytes);
        }
    }
});
