//! Names for runs created without one, in MLflow's form `<adjective>-<animal>-<0..=1000>`
//! (e.g. `brave-otter-417`), at most 20 characters: what an MLflow user sees for GridSearchCV's
//! child runs and for `MlflowClient.create_run` without a name.

/// Adjectives (the words are runql's own).
const ADJECTIVES: &[&str] = &[
    "able", "agile", "amber", "ample", "ardent", "bold", "brave", "bright", "brisk", "calm",
    "candid", "clever", "cosmic", "crisp", "curious", "daring", "deft", "eager", "earnest", "epic",
    "fair", "fearless", "fleet", "fond", "frank", "gentle", "giddy", "glad", "golden", "grand",
    "happy", "hardy", "honest", "humble", "jolly", "keen", "kind", "lively", "loyal", "lucid",
    "lucky", "merry", "mighty", "modest", "nimble", "noble", "patient", "placid", "plucky",
    "polite", "proud", "quick", "quiet", "rapid", "regal", "robust", "rosy", "rustic", "serene",
    "sharp", "shiny", "silent", "sleek", "smart", "snappy", "solid", "spry", "steady", "stellar",
    "sturdy", "sunny", "swift", "tidy", "tranquil", "upbeat", "vast", "vivid", "warm", "wise",
    "witty", "zesty",
];

/// Animals.
const ANIMALS: &[&str] = &[
    "ant", "bat", "bear", "bee", "bison", "boar", "carp", "cat", "cod", "colt", "crab", "crane",
    "crow", "deer", "dingo", "dog", "dove", "duck", "eagle", "eel", "elk", "emu", "finch", "fish",
    "fox", "frog", "gecko", "goat", "goose", "gull", "hare", "hawk", "hen", "heron", "horse",
    "ibis", "jay", "koala", "lark", "lemur", "lion", "llama", "lynx", "mole", "moose", "moth",
    "mouse", "newt", "otter", "owl", "ox", "panda", "perch", "pig", "pony", "puma", "quail", "rat",
    "raven", "robin", "seal", "shark", "sheep", "shrew", "skunk", "slug", "snail", "squid",
    "stork", "swan", "tern", "tiger", "toad", "trout", "tuna", "vole", "wasp", "whale", "wolf",
    "wren", "yak", "zebra",
];

/// MLflow's longest generated name.
const MAX_LEN: usize = 20;

/// A fresh run name.
pub(crate) fn generate() -> String {
    // The random tail of a UUIDv7 (its last 8 bytes) as the dice.
    let bytes = *uuid::Uuid::now_v7().as_bytes();
    let n = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]) as usize;
    let name = format!(
        "{}-{}-{}",
        ADJECTIVES[n(10) % ADJECTIVES.len()],
        ANIMALS[n(12) % ANIMALS.len()],
        n(14) % 1001
    );
    name.chars().take(MAX_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_have_mlflows_form() {
        for _ in 0..500 {
            let name = generate();
            assert!(name.len() <= MAX_LEN, "{name}");
            let parts: Vec<&str> = name.split('-').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert!(ADJECTIVES.contains(&parts[0]), "{name}");
            assert!(ANIMALS.contains(&parts[1]), "{name}");
            assert!(parts[2].parse::<u16>().is_ok_and(|n| n <= 1000), "{name}");
        }
        // Not one name over and over.
        let distinct: std::collections::HashSet<String> = (0..50).map(|_| generate()).collect();
        assert!(distinct.len() > 40);
    }
}
