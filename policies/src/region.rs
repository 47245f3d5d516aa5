//! Where is the user? The country of a phone number from real numbering-plan data (shared calling
//! codes like +1, +7, +39, +44 and +47 resolved by number range), of a locale (`fr_FR`, `en-US`),
//! and country groups (`EU`, `EEA`) as data.

use std::collections::{BTreeMap, BTreeSet};

/// Every ISO 3166-1 alpha-2 code, plus `XK` (Kosovo, in common use).
pub const ISO_COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS \
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI \
KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC \
NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM \
SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT \
ZA ZM ZW";

/// True for an ISO 3166-1 alpha-2 code (upper case).
pub fn is_country(code: &str) -> bool {
    code.len() == 2 && ISO_COUNTRIES.split_whitespace().any(|c| c == code)
}

/// The country of an E.164 number (`+33612345678`, or a WhatsApp `wa_id` without the `+`).
pub fn country_of_phone(number: &str) -> Option<String> {
    let digits: String = number.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() < 6 || digits.len() > 15 {
        return None;
    }
    // Vatican City numbers live inside Italy's +39 06 plan (06 698…) besides its own +379.
    if digits.starts_with("3906698") || digits.starts_with("379") {
        return Some("VA".into());
    }
    let parsed = phonenumber::parse(None, format!("+{digits}")).ok()?;
    if let Some(id) = parsed.country().id() {
        return Some(format!("{id:?}"));
    }
    // No region matched the number's ranges: the main country of its calling code.
    let code = parsed.country().code();
    let regions = phonenumber::metadata::DATABASE.by_code(&code)?;
    let main = regions.iter().find(|m| m.is_main_country_for_code()).or(regions.first())?;
    Some(main.id().to_string())
}

/// The country of a locale: `fr_FR`, `en-US`, `pt_BR.UTF-8` → `FR`, `US`, `BR`; none for `fr`.
pub fn country_of_locale(locale: &str) -> Option<String> {
    let base = locale.split(['.', '@']).next()?;
    let region = base.split(['_', '-']).nth(1)?.to_ascii_uppercase();
    is_country(&region).then_some(region)
}

/// The language of a locale: `fr_FR` → `fr`.
pub fn language_of_locale(locale: &str) -> Option<String> {
    let lang = locale.split(['_', '-', '.', '@']).next()?.to_ascii_lowercase();
    (lang.len() == 2 || lang.len() == 3).then_some(lang)
}

/// Named groups of countries; a group may contain other groups.
#[derive(Clone, Debug, Default)]
pub struct Groups(BTreeMap<String, Vec<String>>);

impl Groups {
    /// The groups shipped in `policies/data/country_groups.toml` (EU, EEA).
    pub fn builtin() -> Self {
        let t: BTreeMap<String, Vec<String>> =
            toml::from_str(include_str!("../data/country_groups.toml")).expect("the shipped country groups parse");
        Groups(t)
    }

    /// Adds or replaces a group.
    pub fn insert(&mut self, name: String, members: Vec<String>) {
        self.0.insert(name, members);
    }

    /// Whether `name` is a group.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The countries of a code or group (a code is itself), groups expanded recursively.
    pub fn expand(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.expand_into(name, &mut out, 0);
        out
    }

    fn expand_into(&self, name: &str, out: &mut BTreeSet<String>, depth: usize) {
        match self.0.get(name) {
            Some(members) if depth < 8 => members.iter().for_each(|m| self.expand_into(m, out, depth + 1)),
            Some(_) => {}
            None => {
                out.insert(name.to_string());
            }
        }
    }

    /// Whether `country` is in the EU (by the `EU` group).
    pub fn is_eu(&self, country: &str) -> bool {
        self.expand("EU").contains(country)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_calling_codes_resolve_to_the_right_country() {
        let cases = [
            ("+33612345678", "FR"),
            ("+12025550123", "US"),  // Washington DC
            ("+14165550123", "CA"),  // Toronto
            ("+18765550123", "JM"),  // Jamaica shares +1
            ("+74951234567", "RU"),  // Moscow
            ("+77012345678", "KZ"),  // Kazakhstan shares +7
            ("+390669812345", "VA"), // Vatican numbers under +39 06 698
            ("+390612345678", "IT"),
            ("+447700900123", "GB"),
            ("+447781123456", "GG"), // Guernsey mobile
            ("+447797123456", "JE"), // Jersey mobile
            ("+447624123456", "IM"), // Isle of Man mobile
            ("+4779123456", "SJ"),   // Svalbard
            ("+4791234567", "NO"),
            ("+590690123456", "GP"), // Guadeloupe
            ("+594694123456", "GF"), // French Guiana
            ("+596696123456", "MQ"), // Martinique
            ("+262692123456", "RE"), // Réunion
            ("+262639012345", "YT"), // Mayotte
            ("+358181234567", "AX"), // Åland
            ("447700900123", "GB"),  // a wa_id has no plus
        ];
        for (n, want) in cases {
            assert_eq!(country_of_phone(n).as_deref(), Some(want), "{n}");
        }
        assert_eq!(country_of_phone("+999"), None);
        assert_eq!(country_of_phone("not a number"), None);
    }

    #[test]
    fn outermost_regions_are_eu_and_crown_dependencies_svalbard_and_the_vatican_are_not() {
        let g = Groups::builtin();
        for c in ["FR", "DE", "GP", "GF", "MQ", "RE", "YT", "MF", "AX"] {
            assert!(g.is_eu(c), "{c}");
        }
        for c in ["GB", "GG", "JE", "IM", "SJ", "VA", "NO", "CH", "US"] {
            assert!(!g.is_eu(c), "{c}");
        }
        let eea = g.expand("EEA");
        assert!(eea.contains("NO") && eea.contains("FR") && !eea.contains("CH"));
    }

    #[test]
    fn locales_give_a_country_and_a_language() {
        assert_eq!(country_of_locale("fr_FR").as_deref(), Some("FR"));
        assert_eq!(country_of_locale("en-US").as_deref(), Some("US"));
        assert_eq!(country_of_locale("pt_BR.UTF-8").as_deref(), Some("BR"));
        assert_eq!(country_of_locale("fr"), None);
        assert_eq!(language_of_locale("de_AT").as_deref(), Some("de"));
    }
}
