//! String descriptors as hosts ask for them: in the device's language, in language 0 (what
//! `sane-find-scanner` and other libusb programs send) and in a language the device lacks,
//! through the in-process host, for both personalities. Real devices answer them all; a STALL
//! made sane-find-scanner print "could not fetch string descriptor: Pipe error".

mod common;

use common::{setup, T};
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::profile::Profile;
use scanemu::time::Instant;
use scanemu::usb::descriptor;

fn profile(name: &str) -> Profile {
    Profile::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/profiles")
            .join(format!("{name}.json")),
    )
    .expect("profile")
}

/// GET_DESCRIPTOR(STRING, `index`) in `language`: the decoded string, or the transfer error.
fn string(profile: &Profile, index: u8, language: u16) -> Result<String, TransferError> {
    let (sim, host) = setup(profile, vec![]);
    sim.block_on(
        async move {
            host.control_in(Setup::get_string_descriptor(index, language, 255), T)
                .await
                .map(|raw| descriptor::decode_string(&raw))
        },
        Instant::from_millis(1000),
    )
    .expect("the request ends")
}

#[test]
fn strings_are_answered_in_any_language() {
    for name in ["fast-flatbed", "escI-b7-flatbed"] {
        let p = profile(name);
        let want = [
            (1, p.usb.manufacturer.clone()),
            (2, p.usb.product.clone()),
            (3, p.usb.serial.clone()),
        ];
        for (index, text) in want {
            for language in [0x0409, 0x0000, 0x0407] {
                assert_eq!(
                    string(&p, index, language).as_ref(),
                    Ok(&text),
                    "{name}: string {index} in language {language:#06x}"
                );
            }
        }
        // The function's own interface string, in language 0 too.
        assert!(
            string(&p, 4, 0).is_ok_and(|s| s.contains("interface")),
            "{name}: interface string"
        );
    }
}

#[test]
fn string_zero_lists_the_one_language_and_unknown_strings_stall() {
    let p = profile("fast-flatbed");
    let (sim, host) = setup(&p, vec![]);
    let (languages, missing) = sim
        .block_on(
            async move {
                let langs = host
                    .control_in(Setup::get_string_descriptor(0, 0, 255), T)
                    .await;
                let missing = host
                    .control_in(Setup::get_string_descriptor(9, 0, 255), T)
                    .await;
                (langs, missing)
            },
            Instant::from_millis(1000),
        )
        .expect("the requests end");
    assert_eq!(languages.expect("string 0"), [4, 3, 0x09, 0x04]);
    assert!(missing.is_err(), "string 9 does not exist: {missing:?}");
}
