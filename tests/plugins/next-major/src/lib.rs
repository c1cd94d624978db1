//! A plugin for a future, incompatible version of the contract: the gateway
//! must refuse it at load with a message naming both versions.

wit_bindgen::generate!({
    inline: r#"
        package gateway:plugin@0.4.0;

        interface hooks {
            init: func(config: string) -> result<_, string>;
        }

        world plugin {
            export hooks;
        }
    "#,
});

#[allow(dead_code)]
struct NextMajor;

impl exports::gateway::plugin::hooks::Guest for NextMajor {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
export!(NextMajor);
