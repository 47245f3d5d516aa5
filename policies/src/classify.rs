//! Moderation classifiers behind one interface.
//!
//! [`RuleClassifier`] is the built-in CPU classifier: rules with context. It does not flag
//! alarming words by themselves; it looks for *intent* — an instruction-seeking frame ("how do I",
//! "best way to", "where can I buy") around a harmful act aimed at a harmful target (a person, not a
//! process; a real weapon, not a bath bomb) — and it lets through the contexts that make such words
//! safe: definitions, history, games and fiction, figurative speech, public institutions.
//! Categories follow Llama Guard's hazard taxonomy (S1–S14); `debated` marks debated topics.

/// What a classifier found in a text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Classification {
    /// Hazard categories (`S1` … `S14`).
    pub categories: Vec<&'static str>,
    /// A debated political or social topic (answered in balanced mode, never refused).
    pub debated: bool,
}

/// A moderation classifier.
pub trait Classifier: Send + Sync {
    /// Short name, for the audit trail.
    fn name(&self) -> &str;
    /// Classifies one user message (or, for output checks, one reply).
    fn classify(&self, text: &str) -> Classification;
}

/// A shared classifier (one loaded model serving policy sets rebuilt on reload).
impl<T: Classifier + ?Sized> Classifier for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn classify(&self, text: &str) -> Classification {
        (**self).classify(text)
    }
}

/// The built-in rules-with-context classifier.
#[derive(Default)]
pub struct RuleClassifier;

const HOWTO: &[&str] = &[
    "how do i", "how can i", "how could i", "how would i", "how should i", "how might i", "how do you", "how can you",
    "how would you", "how do we", "how can we", "how does one", "how can one", "how to", "how would someone",
    "how can someone", "how do people", "best way to", "best ways to", "easiest way to", "quickest way to", "fastest way to",
    "ways to", "way to", "steps to", "step by step", "instructions", "guide to", "teach me", "help me", "tips for",
    "tips on", "where can i", "where do i", "where could i", "where to", "what do i need to", "what should i use to",
    "what's the best", "what is the best", "what is the easiest", "what's the easiest", "what would be the best",
    "can you tell me how", "tell me how", "show me how", "explain how i", "give me", "i want to", "i need to",
    "i'm going to", "i am going to", "i plan to", "should i", "what household", "what poison", "which poison",
    "ways of", "way of", "the process for", "process of", "good place to", "good places to", "where is a good",
    "where can i find", "method for", "method of", "methods", "techniques", "how would one", "what are good",
    "what are some", "what are the best", "can you list", "list some", "give me some", "how can we", "how do we",
    "should we", "what do i need to do to", "what would i need", "where could i", "is there a way to", "any way to",
    "can i use", "could i use", "can i ", "could i ", "do i ", "would i ", "good plan", "a plan for", "what steps should",
    "steps should i", "how would i go about", "how do i go about", "how can i go about", "what's the most effective",
    "most effective way", "what tools should", "convince people", "show that", "prove that",
];

const DEFINITION: &[&str] = &[
    "what is ", "what's ", "what are ", "what does ", "what do people mean", "define ", "definition of", "meaning of",
    "what counts as", "explain what", "what was ", "what were ", "what constitutes", "is it considered",
    "legal definition", "how is it defined", "what does the law say",
];

const HISTORY: &[&str] = &[
    "what happened", "why did", "how did", "history of", "historical", "in history", "during the", "what caused",
    "what led to", "who was responsible", "how many people died", "what were the", "when did", "what was the",
];

const FICTION: &[&str] = &[
    "video game", "videogame", "in a game", "in the game", "in my game", "minecraft", "fortnite", "call of duty",
    "grand theft auto", "gta", "skyrim", "witcher", "overwatch", "league of legends", "counter-strike", "counter strike",
    "pubg", "apex legends", "halo", "zelda", "pokemon", "pokémon", "the sims", "chess", "checkers", "poker", "monopoly",
    "paintball", "laser tag", "dungeons", "d&d", "dnd", "roleplay", "role-play", "tabletop", "board game", "card game",
    "in a movie", "in the movie", "in a film", "in my novel", "in a novel", "in my story", "in a story", "for a story",
    "for my novel", "screenplay", "in the book", "in the play", "fictional", "character", "in the show", "in the series",
    "murder mystery", "cluedo", "among us", "zombie", "zombies", "mafia game", "werewolf game", "simulation", "in a dream",
    "battlefield", "mission impossible", "assassin's creed", "hitman", "red dead", "the last of us", "resident evil",
    "doom", "valorant", "rainbow six", "far cry", "mortal kombat", "street fighter", "tekken", "elden ring", "dark souls",
    "diablo", "world of warcraft", "warcraft", "starcraft", "civilization", "age of empires", "total war", "risk",
    "stratego", "battleship", "judo", "karate", "boxing", "kickboxing", "mma", "ufc", "wrestling", "jiu-jitsu", "jiu jitsu",
    "bjj", "taekwondo", "kung fu", "muay thai", "fencing", "sparring", "self-defense class", "self defense class",
    "rugby", "american football", "hockey", "dodgeball", "video", "the film", "a film", "the novel", "the series",
    "james bond", "star wars", "game of thrones", "breaking bad", "the godfather", "john wick", "die hard", "sherlock",
    "harry potter", "lord of the rings", "the hunger games", "squid game", "the sopranos", "peaky blinders", "narcos",
    "ocean's eleven", "heist movie", "in fortnite", "in roblox", "roblox", "terraria", "stardew", "animal crossing",
];

/// Predicates nobody can satisfy: "why can't <group> <impossible>" is nonsense, not discrimination.
const IMPOSSIBLE: &[&str] = &[
    "on saturn", "on mars", "on the moon", "on jupiter", "on venus", "on mercury", "on pluto", "on the sun",
    "sun's surface", "in space", "made of", "lightning", "breathe underwater", "breathe in space", "fly", "flying",
    "teleport", "time travel", "time-travel", "invisible", "invisibility", "read minds", "read other people's minds",
    "telepathy", "telepathic", "superpowers", "super powers", "laser", "lasers", "x-ray vision", "walk through walls",
    "photosynthesize", "photosynthesise", "hibernate", "levitate", "turn into", "live forever", "immortal",
    "see through walls", "control the weather", "breathe fire", "shoot lightning", "run at the speed of light",
    "speed of light", "live underwater", "survive without", "grow wings", "glow in the dark", "transform into",
    "become a cloud", "talk to animals", "turn lead into gold", "stop time", "travel back in time", "be made of",
];

const VIOLENT_VERBS: &[&str] = &[
    "kill", "murder", "assassinate", "stab", "shoot", "strangle", "poison", "slaughter", "butcher", "behead",
    "decapitate", "torture", "maim", "hurt", "harm", "injure", "attack", "assault", "beat up", "punch", "kidnap",
    "abduct", "drown", "suffocate", "smother", "choke", "hang", "burn", "set fire to", "run over", "execute",
    "eliminate", "get rid of", "take out", "dispose of", "hit", "bludgeon", "skin", "dismember", "cripple", "paralyze",
    "gas", "blow up", "bomb", "stalk", "terrorize", "threaten", "knock out", "push", "trip", "break the legs of",
    "break the neck of", "break someone's", "slit", "electrocute", "starve", "lynch", "shank",
    "terminate", "liquidate", "exterminate", "eradicate", "annihilate", "decimate", "wipe out", "do away with",
    "overpower", "smash", "crush", "snap", "waterboard", "massacre", "gun down", "mow down", "neutralize",
    "neutralise", "silence", "dispatch", "off", "headshot", "give", "end", "cut", "beat", "whip", "tie up",
    "stab", "batter", "sedate", "drug", "abuse", "enslave", "torment", "mutilate", "disfigure", "blind", "gouge",
    "gut", "euthanize", "euthanise", "chop up", "dismember", "slay", "hunt down", "hunt", "capture", "snatch", "lure",
    "grab", "throttle", "tackle", "sever", "crack open", "break", "destroy", "ruin", "wipe", "cull", "purge",
    "lock up", "imprison", "starve", "freeze", "bury", "hide", "set on fire", "sacrifice",
];

/// Single words that name a person or people (matched in the noun phrase after a verb).
const PERSON_NOUNS: &[&str] = &[
    "person", "persons", "people", "human", "humans", "humanity", "mankind", "man", "men", "woman", "women", "girl",
    "girls", "boy", "boys", "child", "children", "kid", "kids", "baby", "babies", "toddler", "teen", "teenager",
    "teenagers", "infant", "adult", "adults", "wife", "husband", "spouse", "partner", "girlfriend", "boyfriend",
    "fiance", "fiancee", "ex", "mom", "mother", "dad", "father", "parent", "parents", "grandparent", "grandparents",
    "grandmother", "grandma", "grandfather", "grandpa", "brother", "sister", "sibling", "siblings", "son", "daughter",
    "uncle", "aunt", "cousin", "nephew", "niece", "family", "relatives", "boss", "manager", "coworker", "coworkers",
    "colleague", "colleagues", "employee", "employees", "employer", "neighbor", "neighbour", "neighbors", "neighbours",
    "teacher", "teachers", "student", "students", "classmate", "classmates", "roommate", "friend", "friends", "enemy",
    "enemies", "rival", "landlord", "tenant", "doctor", "nurse", "cop", "cops", "police", "policeman", "policemen",
    "officer", "officers", "soldier", "soldiers", "president", "senator", "politician", "politicians", "mayor", "judge",
    "lawyer", "witness", "journalist", "journalists", "protester", "protesters", "immigrant", "immigrants", "refugee",
    "refugees", "stranger", "strangers", "victim", "victims", "hostage", "hostages", "guard", "someone", "somebody",
    "anyone", "everyone", "him", "her", "civilians", "villagers", "population", "crowd", "citizens", "voters",
    "worshippers", "jew", "jews", "muslim", "muslims", "christian", "christians", "body", "corpse", "cadaver",
    "prostitute", "homeless", "elderly", "pensioner", "king", "queen", "pope", "ceo", "celebrity", "celebrities",
    "babysitter", "nanny", "cleaner", "patient", "patients", "customer", "customers", "pedestrian", "pedestrians",
    "driver", "passenger", "passengers", "tourist", "tourists", "worker", "workers", "inmate", "inmates", "prisoner",
    "prisoners", "opponent", "opponents", "myself", "yourself", "himself", "herself", "race", "tribe", "village", "town",
];

const COLLECTIVES: &[&str] = &["group", "number", "lot", "bunch", "crowd", "population", "couple", "few", "handful", "busload", "room", "classroom"];

const STOP_WORDS: &[&str] = &["of", "for", "with", "at", "in", "on", "to", "from", "about", "into", "by", "without", "and", "or", "so", "because", "when", "while", "if", "that", "who", "using", "like"];

const PROPERTY: &[&str] = &["house", "home", "car", "cars", "tires", "tyres", "windows", "window", "office", "store", "shop", "business", "property", "fence", "door", "mailbox", "bike", "laptop", "computer", "phone", "garden", "lawn", "boat", "truck", "apartment", "flat", "restaurant", "garage"];

const PROPERTY_VERBS: &[&str] = &["destroy", "demolish", "vandalize", "vandalise", "slash", "key", "smash", "wreck", "trash", "sabotage", "break", "set fire to", "burn", "burn down", "torch", "deface", "flood", "damage", "ruin", "blow up", "explode", "break into", "poison"];

const HUMAN_TARGETS: &[&str] = &[
    "someone", "somebody", "a person", "people", "a human", "humans", "a man", "men", "a woman", "women", "a girl",
    "girls", "a boy", "boys", "a child", "children", "a kid", "kids", "a baby", "babies", "a toddler", "a teenager",
    "teenagers", "my wife", "my husband", "my partner", "my girlfriend", "my boyfriend", "my mom", "my mother", "my dad",
    "my father", "my brother", "my sister", "my son", "my daughter", "my boss", "my neighbor", "my neighbour",
    "my teacher", "my classmate", "my coworker", "my co-worker", "my colleague", "my roommate", "my friend", "my ex",
    "my family", "my grandmother", "my grandma", "my grandfather", "my grandpa", "my uncle", "my aunt", "my cousin",
    "my landlord", "my doctor", "my enemy", "my enemies", "my rival", "my spouse", "my stepdad", "my stepmom", "my baby",
    "my parents", "my kids", "my children", "my students", "my employees", "my manager", "my bully", "my ex-wife",
    "my ex-husband", "my ex-girlfriend", "my ex-boyfriend", "the president", "a president", "the prime minister",
    "a politician", "politicians", "a senator", "the mayor", "a judge", "a police officer", "police officers", "a cop",
    "cops", "the police", "a witness", "a journalist", "journalists", "a protester", "protesters", "an immigrant",
    "immigrants", "a stranger", "strangers", "a homeless person", "homeless people", "an old man", "an old woman",
    "an old person", "an elderly", "the elderly", "a nurse", "a doctor", "a teacher", "a student", "students",
    "my parents", "a family", "a crowd", "civilians", "a classmate", "a coworker", "a neighbor", "a neighbour",
    "an ex", "him", "her", "myself", "yourself", "a jew", "jews", "a muslim", "muslims", "a christian", "christians",
    "a gay", "gay people", "black people", "a black", "white people", "asians", "a refugee", "refugees", "a hostage",
    "a body", "the body", "a corpse", "a person's", "someone's", "somebody's", "human beings", "a human being",
    "the king", "the queen", "a celebrity", "the pope", "an officer", "a guard", "the guard", "security guard",
    "a village", "a town", "a city", "a population", "the population", "a crowd", "a community", "a group of",
    "a tribe", "an ethnic group", "a race", "villagers", "residents", "civilians", "passengers", "tourists",
    "a school", "a classroom", "my class", "my school", "a church", "a mosque", "a synagogue", "a concert",
];

const FIGURATIVE: &[&str] = &[
    "kill time", "killing time", "kill it", "killed it", "killing it", "kill the lights", "kill the music",
    "kill the mood", "kill the vibe", "kill the engine", "kill the conversation", "kill two birds", "dressed to kill",
    "make a killing", "shoot the breeze", "shoot my shot", "shoot a photo", "shoot a video", "shoot a film",
    "shoot a movie", "shoot hoops", "shoot for the stars", "shoot me an email", "blow off steam", "blow up a balloon",
    "blow up balloons", "blow up the internet", "blow up on social", "photo bomb", "photobomb", "bath bomb",
    "bomb the exam", "bombed the exam", "bomb a test", "bombing a test", "break a leg", "knock them dead",
    "knock 'em dead", "beat the heat", "beat the traffic", "beat the odds", "beat the clock", "beat the competition",
    "beat my record", "beat my personal", "beat the game", "beat the boss", "beat a level", "crush it", "crush the exam",
    "crush my workout", "steal the show", "steal a base", "steal a glance", "steal someone's heart", "steal the spotlight",
    "hang out", "hang up", "hang in there", "hang a picture", "hang a painting", "execute a plan", "execute the plan",
    "execute a risky plan", "execute code", "execute a command", "execute a trade", "execute a strategy",
    "punch above", "punch line", "punchline", "murder a song", "murder this song", "slay", "nail the", "destroy the exam",
    "gut a fish", "gut feeling", "butcher a chicken", "slaughter a chicken", "slaughter a pig", "slaughter a cow",
    "slaughter a lamb", "kill the power", "kill the process", "kill a process", "kill a python", "kill my",
    "terminate", "take out the trash", "take out the garbage", "take out a loan", "take out the competition",
    "get rid of weeds", "get rid of mold", "get rid of pests", "get rid of ants", "get rid of a cold",
    "for dinner", "for lunch", "for breakfast", "for a drink", "for drinks", "for coffee", "on a date", "to dinner",
    "to the movies", "for a walk", "shopping", "can of coke", "bottle of coke", "glass of coke", "diet coke",
    "weed my", "weed the", "to weed", "weeding", "break into the industry", "break into the film industry",
    "break into the music industry", "break into the market", "break into acting", "break into tech",
    "break into the business", "break into the field", "break into a career", "steal the show", "steal the spotlight",
    "i own", "my own property", "my property", "my own house", "my old house", "our old",
];

const WEAPONS: &[&str] = &[
    "bomb", "pipe bomb", "explosive", "explosives", "ied", "grenade", "molotov", "napalm", "nerve agent", "sarin",
    "ricin", "anthrax", "mustard gas", "chemical weapon", "chemical weapons", "bioweapon", "biological weapon",
    "dirty bomb", "nuclear weapon", "nuke", "ghost gun", "silencer", "suppressor", "untraceable gun", "poison gas",
    "thermite", "tnt", "c4", "semtex", "car bomb", "suicide vest", "vx", "botulinum", "smallpox", "plague",
    "zip gun", "3d printed gun", "3d-printed gun", "automatic rifle", "machine gun", "full auto", "flamethrower",
    "weapon", "weapons", "a gun", "guns", "a bomb", "bombs", "pipe bombs", "a firearm", "firearms", "an explosive",
];

const MAKE: &[&str] = &[
    "make", "build", "create", "assemble", "construct", "synthesize", "synthesise", "manufacture", "produce", "cook",
    "brew", "prepare", "mix", "3d print", "print", "get", "buy", "obtain", "acquire", "grow", "extract", "weaponize",
];

const DRUGS: &[&str] = &[
    "cocaine", "crack cocaine", "heroin", "meth", "methamphetamine", "crystal meth", "fentanyl", "lsd", "mdma",
    "ecstasy", "ketamine", "pcp", "opium", "crack", "angel dust", "ghb", "rohypnol", "roofies", "black tar", "speed",
    "bath salts", "oxycodone without a prescription", "molly", "coke", "smack", "a gram of", "an ounce of",
    "an eighth of", "psilocybin", "magic mushrooms", "shrooms", "dmt", "xanax without a prescription", "percocet",
];

const CANNABIS: &[&str] = &["marijuana", "marihuana", "weed", "cannabis", "hash", "pot"];

const CRIMES: &[&str] = &[
    "steal", "rob", "shoplift", "burgle", "burglarize", "break into", "hotwire", "pickpocket", "launder money",
    "launder", "evade taxes", "evade tax", "tax evasion", "commit fraud", "commit tax fraud", "insurance fraud",
    "counterfeit", "forge", "scam", "embezzle", "smuggle", "hack into", "hack someone", "phish", "blackmail", "extort",
    "bribe", "vandalize", "spray paint", "kidnap", "traffic", "poach", "cheat on my taxes", "fake id", "fake passport",
    "identity theft", "steal someone's identity", "skim credit cards", "clone a credit card", "ddos", "ransomware",
    "keylogger", "spyware on", "track someone's phone", "access someone's", "get into someone's", "pirate",
    "get away with", "cover up", "avoid getting caught", "without getting caught", "not get caught",
];

const COMMIT_VERBS: &[&str] = &[
    "commit", "carry out", "plan", "get away with", "perpetrate", "organize", "organise", "engage in", "set up",
    "start", "run", "satisfy", "act on", "pull off", "orchestrate", "fund", "finance", "join", "recruit for",
];

const COMMIT: &[&str] = &[
    "murder", "homicide", "manslaughter", "robbery", "arson", "fraud", "a crime", "crimes", "genocide",
    "a terrorist attack", "terrorism", "burglary", "rape", "assault", "a massacre", "a mass shooting", "a school shooting",
    "an atrocity", "a hate crime", "treason", "insurance fraud", "tax fraud", "identity theft", "a hit and run",
    "kidnapping", "a kidnapping", "terrorism", "terror attack", "a terror attack", "trafficking", "human trafficking",
    "a human trafficking operation", "a trafficking ring", "pedophilia", "paedophilia", "child abuse", "money laundering",
    "a heist", "a bank robbery", "a coup", "a shooting", "a bombing", "an assassination", "a hijacking", "a lynching",
    "a pogrom", "ethnic cleansing", "a riot", "a drive-by", "a stabbing", "a poisoning", "an abduction", "a cartel",
    "a drug cartel", "a gang", "extortion", "a ransom", "torture", "a suicide bombing", "a mass killing",
    "someone's death", "a death", "his death", "her death", "the death of", "an explosion", "explosion",
    "a stadium explosion", "an attack", "attack", "attacks", "a murder", "murders", "killings", "a killing", "a poison",
];

const SEX_CRIMES: &[&str] = &[
    "rape", "sexually assault", "sexual assault", "molest", "roofie", "spike a drink", "spike her drink",
    "spike someone's drink", "drug someone's drink", "drug her drink", "drug a girl", "date rape drug", "grope",
    "sex trafficking", "traffic women", "traffic girls", "force someone to have sex", "force her to have sex",
    "upskirt", "revenge porn", "sextort",
];

const MINORS: &[&str] = &[
    "child", "children", "kid", "kids", "minor", "minors", "underage", "under-age", "teen", "teens", "teenager",
    "schoolgirl", "schoolboy", "preteen", "pre-teen", "little girl", "little boy", "year old", "year-old", "toddler",
];

const SEXUAL: &[&str] = &[
    "sex with", "sexual", "nude", "nudes", "naked", "porn", "pornography", "explicit", "erotic", "sexy pictures",
    "sexualize", "sexualise", "groom", "grooming", "seduce", "have sex",
];

const EXPLICIT_REQUEST: &[&str] = &[
    "write an explicit", "write explicit", "write a sex scene", "write an erotic", "write erotica", "write porn",
    "describe sex", "describe in detail how they had sex", "graphic sex", "sexting", "send nudes", "nsfw story",
    "explicit sex", "porn story", "dirty story", "make me horny", "talk dirty",
];

const SELF_HARM: &[&str] = &[
    "kill myself", "killing myself", "end my life", "end my own life", "take my own life", "take my life",
    "commit suicide", "suicide method", "suicide methods", "ways to die", "want to die", "wanna die", "don't want to live",
    "dont want to live", "do not want to live", "hurt myself", "harm myself", "cut myself", "cutting myself",
    "starve myself", "shoot myself", "hang myself", "poison myself", "drown myself", "overdose", "lethal dose",
    "slit my wrists", "jump off a bridge", "jump off a building", "self-harm", "self harm", "no reason to live",
    "better off dead", "painless way to die", "how many pills", "disappear forever", "suicidal", "sever my artery",
    "sever my wrist", "sever my wrists", "sever my vein", "sever my veins", "sever my cervical artery", "my wrists",
    "my cervical artery", "my carotid", "cut my wrists", "end it all", "bleed out", "slit my throat",
    "die like", "to die like", "go out like", "take to die", "can i take to die", "how can i die", "how do i die",
    "end my suffering", "stop my heart", "not wake up", "never wake up",
];

const PRIVATE_INFO: &[&str] = &[
    "home address", "address", "phone number", "cell number", "mobile number", "telephone number", "social security",
    "ssn", "bank account", "bank details", "credit card", "email address", "email", "passport number", "passport",
    "medical records", "medical history", "health records", "criminal record", "password", "ip address",
    "license plate", "licence plate", "date of birth", "birthday", "sexual orientation", "where does", "live",
    "lives", "login", "pin number", "pin code", "salary", "tax returns", "therapy notes", "diagnosis",
    "browsing history", "search history", "messages", "texts", "text messages", "emails", "location", "whereabouts",
    "photos", "private photos", "diary", "bank statements", "credit card details", "card details", "account details",
    "social media accounts", "dms", "private messages", "phone records", "call logs", "security questions",
    "mother's maiden name", "health", "prescriptions", "net worth", "income", "pin", "iphone pin", "passcode",
    "criminal history", "mental health", "how much money", "earn", "earns", "paid", "debts", "sexual history",
    "religion", "political views", "immigration status", "visa status", "home", "house", "lives", "schedule",
];

const INSTITUTIONS: &[&str] = &[
    "house", "museum", "embassy", "office", "hall", "restaurant", "hotel", "hospital", "school", "university",
    "college", "company", "corporation", "inc", "store", "shop", "airport", "station", "park", "tower", "building",
    "church", "cathedral", "mosque", "temple", "synagogue", "stadium", "library", "zoo", "parliament", "senate",
    "congress", "ministry", "department", "agency", "council", "headquarters", "hq", "city", "town", "palace",
    "castle", "bridge", "monument", "memorial", "opera", "theatre", "theater", "gallery", "aquarium", "court",
    "supreme court", "united nations", "un", "nasa", "fbi", "cia", "nato", "eu", "who", "red cross", "foundation",
    "charity", "organisation", "organization", "club", "team", "party", "government", "white house", "kremlin",
    "downing street", "pentagon", "google", "apple", "microsoft", "amazon", "facebook", "meta", "tesla", "netflix",
    "customer service", "customer support", "helpline", "hotline", "consulate", "police station", "fire station",
    "city hall", "town hall", "post office", "dmv", "irs", "bank",
];

/// Famous fictional characters (general knowledge): asking for their "address" is a question
/// about a story.
const FICTIONAL_PEOPLE: &[&str] = &[
    "harry potter", "hermione", "ron weasley", "dumbledore", "voldemort", "sherlock holmes", "dr watson", "john watson",
    "james bond", "batman", "bruce wayne", "superman", "clark kent", "spider-man", "spiderman", "peter parker",
    "iron man", "tony stark", "wonder woman", "captain america", "the joker", "frodo", "bilbo", "gandalf", "aragorn",
    "luke skywalker", "darth vader", "han solo", "princess leia", "yoda", "homer simpson", "bart simpson",
    "marge simpson", "sponge bob", "spongebob", "mickey mouse", "donald duck", "bugs bunny", "winnie the pooh",
    "paddington", "peter pan", "cinderella", "snow white", "shrek", "elsa", "mario", "luigi", "sonic", "pikachu",
    "lara croft", "master chief", "geralt", "katniss", "bilbo baggins", "jack sparrow", "indiana jones",
    "hannibal lecter", "dracula", "frankenstein", "tarzan", "robin hood", "king arthur", "the grinch", "santa claus",
    "jon snow", "daenerys", "tyrion", "walter white", "jesse pinkman", "tony soprano", "don draper", "michael scott",
    "dwight schrute", "ted lasso", "rick sanchez", "morty", "fred flintstone", "scooby-doo", "scooby doo",
    "paddington bear", "the cat in the hat", "willy wonka", "mary poppins", "atticus finch", "jay gatsby",
    "holden caulfield", "elizabeth bennet", "mr darcy", "jane eyre", "anna karenina", "captain ahab", "hercule poirot",
    "miss marple", "nancy drew", "hardy boys", "alice in wonderland", "the mad hatter", "pinocchio", "garfield",
    "charlie brown", "snoopy", "kermit", "big bird", "barbie", "ken from barbie", "the doctor from doctor who",
    "doctor who", "captain kirk", "spock", "jean-luc picard", "neo", "john wick", "rocky balboa", "forrest gump",
    "minnie mouse", "daisy duck", "goofy", "pluto", "peter griffin", "stewie griffin", "lois griffin", "jason bourne",
    "ethan hunt", "lisa simpson", "ned flanders", "eric cartman", "kenny mccormick", "sailor moon", "naruto", "goku",
    "luffy", "totoro", "wall-e", "buzz lightyear", "woody", "nemo", "dory", "simba", "mufasa", "ariel", "belle",
    "aladdin", "jasmine", "mulan", "moana", "rapunzel", "olaf", "anna from frozen", "shrek", "donkey", "puss in boots",
    "po the panda", "kung fu panda", "the hulk", "bruce banner", "thor", "loki", "black widow", "natasha romanoff",
    "wolverine", "deadpool", "aquaman", "the flash", "green lantern", "catwoman", "harley quinn", "lex luthor",
    "darth maul", "obi-wan", "obi-wan kenobi", "rey", "kylo ren", "chewbacca", "legolas", "gollum", "sauron",
    "samwise", "hagrid", "severus snape", "draco malfoy", "ron", "sirius black", "tom riddle", "the wicked witch",
    "dorothy gale", "sherlock", "moriarty", "hercule", "tintin", "asterix", "obelix", "the smurfs", "papa smurf",
    "heidi", "pippi longstocking", "matilda", "charlie bucket", "oliver twist", "ebenezer scrooge", "tiny tim",
    "don quixote", "romeo", "juliet", "hamlet", "macbeth", "othello", "gregor samsa", "lisbeth salander",
    "jack reacher", "jack ryan", "lara", "nathan drake", "kratos", "link", "samus", "kirby", "donkey kong",
    "bowser", "princess peach", "cloud strife", "solid snake", "arthur morgan", "ellie", "joel miller",
    "barney stinson", "ross geller", "rachel green", "chandler bing", "joey tribbiani", "monica geller",
    "phoebe buffay", "sheldon cooper", "leonard hofstadter", "frasier crane", "carrie bradshaw", "buffy summers",
    "fox mulder", "dana scully", "jessica fletcher", "columbo", "magnum", "macgyver", "the terminator", "sarah connor",
    "ellen ripley", "marty mcfly", "doc brown", "ferris bueller", "hannibal", "norman bates", "freddy krueger",
    "jason voorhees", "michael myers", "pennywise", "chucky", "dexter morgan", "saul goodman", "gus fring",
];

const PROTECTED_GROUPS: &[&str] = &[
    "black people", "blacks", "white people", "whites", "asians", "asian people", "jews", "jewish people", "muslims",
    "christians", "hindus", "sikhs", "buddhists", "atheists", "gay people", "gays", "lesbians", "homosexuals",
    "bisexual people", "trans people", "transgender people", "transgender women", "trans women", "trans men",
    "women", "girls", "immigrants", "refugees", "migrants", "mexicans", "africans", "arabs", "indians", "chinese people",
    "the chinese", "japanese people", "koreans", "gypsies", "roma", "romani people", "disabled people",
    "people with disabilities", "the disabled", "the elderly", "old people", "latinos", "hispanics", "native americans",
    "indigenous people", "aboriginal people", "pakistanis", "jamaicans", "nigerians", "poles", "irish people",
    "catholics", "mormons", "people of color", "poc", "lgbt people", "lgbtq people", "queer people", "non-binary people",
    "autistic people", "deaf people", "blind people", "fat people", "poor people", "single mothers", "palestinians",
    "israelis", "russians", "ukrainians", "iranians", "syrians", "somalis", "ethiopians", "filipinos", "vietnamese people",
];

const DEROGATORY: &[&str] = &[
    "not be allowed to", "shouldn't be allowed to", "should not be allowed to", "not be allowed", "be banned from",
    "be banned", "be denied", "be deported", "be segregated", "be excluded from", "be sterilized", "be sterilised",
    "be exterminated", "be eliminated", "be locked up", "be put in camps", "be enslaved", "be killed", "be shot",
    "not have the right", "not have rights", "shouldn't have rights", "don't deserve", "do not deserve",
    "are inferior", "inferior to", "are less intelligent", "less intelligent", "are stupid", "so stupid", "are lazy",
    "so lazy", "are criminals", "all criminals", "are violent", "so violent", "are dirty", "so dirty", "are evil",
    "are subhuman", "subhuman", "are animals", "vermin", "are parasites", "parasites", "are a disease", "are a plague",
    "are terrorists", "all terrorists", "are greedy", "so greedy", "are ugly", "so ugly", "second-class",
    "second class citizens", "not be trusted", "can't be trusted", "cannot be trusted", "be paid less", "earn less",
    "not vote", "not marry", "not work", "not drive", "not adopt", "not own property", "not hold office",
    "not serve in the military", "not go to school", "not attend university", "not become doctors", "not teach",
    "stay in the kitchen", "belong in the kitchen", "be slaves", "go back to", "not be citizens",
    "not be admitted", "be barred", "barred from", "not be permitted", "be prohibited from", "be kept out",
    "be excluded", "fewer rights", "less rights", "make all", "be in charge", "be the only ones", "not get married",
    "not get to", "not be able to", "not run for", "not be hired", "not be promoted", "not be given",
    "earn less", "paid less", "be fired", "be segregated", "be separated from", "be forced to", "not have children",
    "not be parents", "not be trusted with", "not lead", "not be leaders", "not hold", "not practice", "not practise",
    "not become", "be punished", "be registered", "wear badges", "be tracked",
];

const ATROCITIES: &[&str] = &[
    "holocaust", "genocide", "slavery", "the slave trade", "9/11", "september 11", "rwandan genocide", "ethnic cleansing",
    "nanking", "the armenian genocide", "apartheid", "the khmer rouge", "srebrenica", "the gulag", "the nakba",
    "the trail of tears", "lynching", "lynchings", "jim crow", "the inquisition", "auschwitz", "the killing fields",
    "massacre", "the nanjing massacre", "nanjing", "the 9/11 attacks", "trail of tears", "the rape of nanking",
    "the bombing of", "hiroshima", "nagasaki", "my lai", "the holodomor", "the famine", "pearl harbor",
];

const REGIMES: &[&str] = &[
    "jim crow", "apartheid", "segregation", "the holocaust", "holocaust", "gulag", "gulags", "concentration camp",
    "concentration camps", "death camps", "ethnic cleansing", "pinochet", "hitler", "stalin", "pol pot", "mussolini",
    "nazi", "nazis", "the kkk", "ku klux klan", "slavery", "genocide", "death squads", "the khmer rouge", "idi amin",
    "the final solution", "eugenics", "forced sterilization", "the inquisition", "the cultural revolution",
    "what happened to them", "the rwandan genocide", "the armenian genocide", "the nanking massacre", "the trail of tears",
    "9/11", "the taliban", "isis", "al-qaeda", "al qaeda", "the unabomber", "mao",
];

const REVIVE: &[&str] = &[
    "restore", "bring back", "reintroduce", "recreate", "repeat", "replicate", "emulate", "copy", "use", "apply",
    "implement", "revive", "continue", "finish what", "complete what", "carry on", "imitate", "follow",
];

const DENY: &[&str] = &[
    "overstate", "overstating", "exaggerate", "exaggerating", "lie about", "lying about", "make up", "made up",
    "fabricate", "fabricated", "deny", "denying", "didn't happen", "did not happen", "never happened", "was a hoax",
    "is a hoax", "was fake", "invented", "benefit from", "profit from", "milk", "never took place",
    "didn't take place", "did not take place", "fabrication", "a lie", "a myth", "a hoax", "fake", "staged",
    "overblown", "wasn't real",
];

const GLORIFY: &[&str] = &[
    "was a good thing", "was good", "were good", "was justified", "were justified", "was right", "were right",
    "was necessary", "was great", "benefits of", "positive side of", "positives of", "good side of", "didn't happen",
    "did not happen", "never happened", "was a hoax", "is a hoax", "was fake", "exaggerated", "celebrate",
    "recreate", "do it again", "repeat", "praise", "glorify", "should happen again", "wasn't that bad", "was not that bad",
    "right to", "justified in", "correct to", "success of", "succes of", "achievements of", "good things about",
];

const DEFAMATION: &[&str] = &[
    "is a pedophile", "is a paedophile", "is a rapist", "is a murderer", "is a criminal", "is a fraud",
    "is a terrorist", "is a drug dealer", "was a pedophile", "cheated on", "molested", "abused children",
    "is a nazi", "has aids", "has hiv", "stole money", "took bribes", "is secretly",
];

const DEFAME_FRAME: &[&str] = &[
    "write an article", "write a news", "write a post", "write a tweet", "write a story claiming", "write a review",
    "make up", "fabricate", "spread a rumor", "spread a rumour", "spread rumors", "spread rumours", "claiming that",
    "saying that", "pretend that", "fake news", "false story", "convince people that", "prove that",
];

const IP: &[&str] = &[
    "pirate", "pirated", "torrent", "crack the software", "cracked version", "cracked copy", "keygen", "bypass drm",
    "remove drm", "strip drm", "full text of", "entire text of", "whole book", "full lyrics", "entire script of",
    "free download of", "download for free", "watch for free", "illegally download", "illegal stream",
    "without paying for", "copy of windows", "crack photoshop", "crack windows", "serial key", "license key for free",
];

const ELECTIONS: &[&str] = &[
    "rig the election", "rig an election", "rig elections", "rig the vote", "stuff ballots", "ballot stuffing",
    "voter suppression", "suppress votes", "suppress the vote", "stop people from voting", "discourage people from voting",
    "keep people from voting", "wrong election date", "fake election", "false voting", "vote twice", "vote more than once",
    "fake ballots", "tamper with voting", "hack voting machines", "hack the election", "election fraud",
    "tell people the election is", "polls are closed", "vote by text",
];

const CODE_ABUSE: &[&str] = &[
    "rm -rf /", "rm -rf --no-preserve-root", ":(){ :|:& };:", "fork bomb", "escape the sandbox", "sandbox escape",
    "exfiltrate", "reverse shell", "read /etc/shadow", "/etc/passwd", "privilege escalation", "disable the firewall",
    "crypto miner on", "cryptominer", "delete all files on the server", "drop table", "format c:",
];

const SPECIALIZED: &[&str] = &[
    "dosage", "how many mg", "how much medication", "prescription", "should i invest", "which stock", "stock tips",
    "legal advice", "sue my", "file a lawsuit", "diagnose", "do i have cancer", "symptoms of",
];

const DEBATED: &[&str] = &[
    "abortion", "pro-life", "pro-choice", "roe v. wade", "roe v wade", "gun control", "gun rights", "second amendment",
    "2nd amendment", "death penalty", "capital punishment", "immigration", "illegal immigrants", "undocumented",
    "border wall", "same-sex marriage", "same sex marriage", "gay marriage", "transgender", "trans athletes",
    "gender identity", "affirmative action", "euthanasia", "assisted suicide", "assisted dying", "does god exist",
    "is god real", "existence of god", "atheism", "religion", "islam", "christianity", "israel", "palestine", "gaza",
    "climate change", "global warming", "vaccine mandate", "vaccines", "socialism", "capitalism", "communism",
    "democrats", "republicans", "liberals", "conservatives", "left-wing", "right-wing", "trump", "biden", "brexit",
    "feminism", "legalize", "legalise", "legalization", "legalisation", "marijuana", "free speech", "censorship",
    "defund the police", "police brutality", "colonialism", "reparations", "nuclear power", "nuclear energy",
    "minimum wage", "universal basic income", "tax the rich", "wealth tax", "monarchy", "veganism", "animal rights",
    "zoos", "circumcision", "school prayer", "homeschooling", "critical race theory", "black lives matter",
    "all lives matter", "pronouns", "drag queens", "the war in", "nato", "taiwan", "tibet", "kashmir", "the crusades",
    "confederate", "columbus day", "abolish", "should the government", "political", "politics", "election",
];

const QUESTION_WORDS: &[&str] = &["What", "Where", "How", "Can", "Who", "Why", "When", "Is", "Do", "Does", "I", "The", "Tell", "Give", "Find", "Should", "Could", "Would", "Please", "Are", "Which", "Help", "Write", "Explain", "Show", "List"];

const QUANTIFIERS: &[&str] = &["some", "many", "most", "other", "these", "those", "all", "few", "more", "young", "real", "normal", "good", "bad", "nice", "two", "three", "random", "certain"];

const BODY_PARTS: &[&str] = &[
    "life", "skull", "head", "neck", "throat", "sternum", "ribs", "face", "spine", "legs", "arms", "kneecaps", "eyes",
    "teeth", "body", "heart", "lungs", "fingers", "hands", "back", "windpipe", "jaw", "nose",
];

const PLACES: &[&str] = &[
    "a house", "the house", "a building", "the building", "a school", "the school", "a car", "a plane", "an airplane",
    "a train", "a bridge", "a bus", "a church", "a mosque", "a synagogue", "a temple", "a hospital", "a stadium",
    "a mall", "a station", "an embassy", "a government building", "the white house", "a factory", "an office",
    "my school", "my office", "my neighbor's house", "my neighbour's house", "someone's house", "someone's car",
    "a restaurant", "a bank", "a crowd", "a city", "a town", "a village", "a power plant", "a dam",
];

const SENSITIVE: &[&str] = &[
    "home address", "phone number", "cell number", "mobile number", "telephone number", "social security", "ssn",
    "bank account", "bank details", "credit card", "card details", "email address", "passport number", "medical records",
    "medical history", "health records", "criminal record", "password", "ip address", "license plate", "licence plate",
    "sexual orientation", "where does", "pin number", "tax returns", "therapy notes", "browsing history", "search history",
    "private messages", "text messages", "phone records", "bank statements", "security questions", "mother's maiden name",
    "whereabouts", "date of birth", "login", "private photos", "account details", "pin", "passcode", "iphone pin",
    "criminal history", "mental health", "health history", "how much money", "salary", "earn", "earns", "income",
    "sexual history", "immigration status", "debts", "net worth", "home address", "where they live", "where she lives",
    "where he lives", "medical", "diagnosis", "prescriptions", "therapy",
];

/// Whether some `verb` is followed, within `window` words, by a phrase `is_target` accepts.
fn verb_then(words: &[&str], verbs: &[&str], window: usize, is_target: &dyn Fn(&str) -> bool) -> bool {
    for verb in verbs {
        let vw: Vec<&str> = verb.split(' ').collect();
        for i in 0..words.len() {
            if !vw.iter().enumerate().all(|(k, v)| words.get(i + k).is_some_and(|w| stem_eq(w, v))) {
                continue;
            }
            let from = (i + vw.len()).min(words.len());
            let after = words[from..(from + window).min(words.len())].join(" ");
            if is_target(&after) {
                return true;
            }
        }
    }
    false
}

/// "people to shoot", "someone to kill": a person followed by `to <verb>`.
fn target_then_verb(words: &[&str], is_target: &dyn Fn(&str) -> bool, verbs: &[&str]) -> bool {
    for i in 0..words.len() {
        if words[i] != "to" || i == 0 {
            continue;
        }
        let before = words[i.saturating_sub(3)..i].join(" ");
        let next = words.get(i + 1).copied().unwrap_or("");
        if is_target(&before) && verbs.iter().any(|v| !v.contains(' ') && stem_eq(next, v)) {
            return true;
        }
    }
    false
}

/// "someone's skull", "a child's sternum", "their legs": a body part of a person.
fn possessed_body_part(np: &str) -> bool {
    let w: Vec<&str> = np.split_whitespace().collect();
    w.windows(2).any(|p| {
        let owner = p[0].trim_end_matches("'s").trim_end_matches('\'');
        let owned = p[0].ends_with("'s") || p[0].ends_with("s'") || matches!(p[0], "their" | "his" | "her" | "your");
        owned && BODY_PARTS.contains(&p[1]) && (matches!(p[0], "their" | "his" | "her" | "your") || PERSON_NOUNS.contains(&owner) || HUMAN_TARGETS.iter().any(|h| h.ends_with(owner)))
    })
}

/// The noun phrase at the start of `after`: up to a preposition or conjunction ("a photo of my
/// friend" → "a photo"), continuing through "of" after a collective ("a group of people").
fn noun_phrase(after: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for w in after.split_whitespace() {
        if STOP_WORDS.contains(&w) && !out.is_empty() {
            let collective = out.last().is_some_and(|p| COLLECTIVES.contains(p));
            if !(w == "of" && collective) {
                break;
            }
        }
        out.push(w);
    }
    out.join(" ")
}

/// Whether some phrase of `list` occurs with its first word inflected (stealing, robbed).
fn has_stemmed(words: &[&str], list: &[&str]) -> bool {
    list.iter().any(|p| {
        let pw: Vec<&str> = p.split(' ').collect();
        (0..words.len()).any(|i| pw.iter().enumerate().all(|(k, v)| words.get(i + k).is_some_and(|w| if k == 0 { stem_eq(w, v) } else { w == v })))
    })
}

fn has_any(text: &str, list: &[&str]) -> bool {
    list.iter().any(|p| contains_phrase(text, p))
}

/// `phrase` occurs in `text` at word boundaries.
fn contains_phrase(text: &str, phrase: &str) -> bool {
    let mut start = 0;
    while let Some(i) = text[start..].find(phrase) {
        let at = start + i;
        let end = at + phrase.len();
        // A phrase that starts or ends with a space carries its own boundary there.
        let before = phrase.starts_with(' ') || text[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after = phrase.ends_with(' ') || text[end..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        if before && after {
            return true;
        }
        start = at + phrase.chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// Whether some `verb` is followed, within `window` words, by some `target`.
fn verb_then_target(words: &[&str], verbs: &[&str], targets: &[&str], window: usize) -> bool {
    verb_then(words, verbs, window, &|after: &str| targets.iter().any(|t| contains_phrase(after, t)))
}

/// `word` is `verb` or one of its inflections (kill, kills, killed, killing).
fn stem_eq(word: &str, verb: &str) -> bool {
    if word == verb {
        return true;
    }
    for suffix in ["s", "es", "ed", "d", "ing", "ting", "ping", "ning", "ging", "ming", "bing"] {
        if let Some(stem) = word.strip_suffix(suffix)
            && (stem == verb || verb.strip_suffix('e') == Some(stem) || stem.strip_suffix(stem.chars().last().unwrap_or(' ')).is_some_and(|s| s == verb && suffix.len() > 3))
        {
            return true;
        }
    }
    matches!((verb, word), ("shoot", "shot") | ("hang", "hung") | ("hit", "hits") | ("beat", "beaten") | ("steal", "stole" | "stolen") | ("burn", "burnt"))
}

impl RuleClassifier {
    fn normalize(text: &str) -> String {
        let lower = text.to_lowercase().replace(['’', '‘'], "'");
        lower.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

impl Classifier for RuleClassifier {
    fn name(&self) -> &str {
        "builtin-rules"
    }

    fn classify(&self, text: &str) -> Classification {
        let t = Self::normalize(text);
        let words: Vec<&str> = t.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-' || c == '/')).filter(|w| !w.is_empty()).collect();
        let howto = has_any(&t, HOWTO);
        let definition = has_any(&t, DEFINITION) && !howto;
        let history = has_any(&t, HISTORY) && !howto;
        let fiction = has_any(&t, FICTION);
        let figurative = has_any(&t, FIGURATIVE) || has_stemmed(&words, FIGURATIVE);
        let informational = definition || history;
        let mut cats: Vec<&'static str> = Vec::new();
        let mut add = |c: &'static str| {
            if !cats.contains(&c) {
                cats.push(c);
            }
        };

        // S11 self-harm: first person or how-to, outside games and stories.
        if has_any(&t, SELF_HARM) && !fiction && !(informational && !t.contains(" i ") && !t.starts_with("i ")) {
            add("S11");
        }
        // S4 child sexual exploitation: sexual content with minors, in any framing but a definition.
        if has_any(&t, SEXUAL) && has_any(&t, MINORS) && !definition {
            add("S4");
        }
        // S3 sex crimes.
        if has_any(&t, SEX_CRIMES) && !informational && !fiction {
            add("S3");
        }
        // S12 sexual content requested explicitly.
        if has_any(&t, EXPLICIT_REQUEST) {
            add("S12");
        }
        // Names in the text (two capitalised words not starting a question): people unless public.
        let names: Vec<String> = text
            .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| {
                let cap = |s: &str| s.chars().next().is_some_and(char::is_uppercase) && s.chars().skip(1).any(char::is_lowercase);
                cap(w[0]) && cap(w[1]) && !QUESTION_WORDS.contains(&w[0])
            })
            .map(|w| format!("{} {}", w[0], w[1]).to_lowercase())
            .collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let human = |after: &str| {
            let np = noun_phrase(after);
            has_any(&np, HUMAN_TARGETS)
                || has_any(&np, &name_refs)
                || np.split_whitespace().any(|w| PERSON_NOUNS.contains(&w.trim_end_matches("'s").trim_end_matches('\'')))
                || possessed_body_part(&np)
        };
        // S1 violent crimes: a violent act aimed at people, sought as instructions or intent.
        let violent_person = verb_then(&words, VIOLENT_VERBS, 6, &human) || target_then_verb(&words, &human, VIOLENT_VERBS);
        let self_only = verb_then_target(&words, &["kill", "hurt", "harm", "cut", "starve", "shoot", "hang", "poison", "drown", "end", "take"], &["myself", "my life", "my own life"], 2);
        let commit = verb_then_target(&words, COMMIT_VERBS, COMMIT, 4);
        let intent = howto || t.starts_with("i want") || t.starts_with("i'm going") || t.contains("i will ") || t.contains("help me");
        if ((violent_person && !self_only) || commit) && intent && !fiction && !figurative && !informational {
            add(if has_any(&t, &["pedophilia", "paedophilia", "child abuse"]) { "S4" } else { "S1" });
        }
        // S9 indiscriminate weapons: making or getting them; blowing up places.
        let weapon = verb_then_target(&words, MAKE, WEAPONS, 4) && !figurative;
        let place = |after: &str| {
            let np = noun_phrase(after);
            has_any(&np, PLACES) || np.split_whitespace().any(|w| matches!(w, "base" | "hospital" | "school" | "stadium" | "church" | "mosque" | "synagogue" | "temple" | "airport" | "parliament" | "embassy" | "building" | "mall" | "station" | "train" | "plane" | "bus" | "bridge" | "concert" | "festival" | "market" | "crowd" | "city" | "town" | "village" | "factory" | "plant" | "dam" | "pipeline" | "refinery"))
        };
        let blow_up = (verb_then(&words, &["blow up", "bomb", "set fire to", "burn down", "torch", "gas", "attack", "explode", "set"], 5, &place)
            && (!t.contains(" set ") || t.contains("on fire")))
            && !figurative;
        if (weapon || blow_up) && (howto || intent) && !fiction && !definition {
            add("S9");
        }
        // S2 non-violent crimes: drugs sought, crimes as instructions.
        let drug_verbs: Vec<&str> = MAKE.iter().chain(&["sell", "score", "find", "order", "smuggle", "deal", "traffic", "push", "ship"]).copied().collect();
        let drug_sought = verb_then_target(&words, &drug_verbs, DRUGS, 5)
            || (verb_then_target(&words, &["sell", "smuggle", "deal", "traffic", "push", "ship", "buy", "score"], CANNABIS, 4)
                && !has_any(&t, &["weed killer", "weedkiller", "weed whacker", "weed eater"]));
        let drug_sought = drug_sought
            && !figurative
            && !has_any(&t, &["crack a joke", "crack an egg", "crack a smile", "crack the code", "crack a code", "crack a case", "crack my knuckles", "coke zero", "diet coke", "coca-cola", "a coke"]);
        let crime = (has_any(&t, CRIMES) || has_stemmed(&words, CRIMES)) && !figurative;
        let crime = crime
            && !(has_any(&t, &["break into"]) && !has_stemmed(&words, &["steal", "rob", "burgle", "hotwire", "shoplift"])
                && !verb_then_target(&words, &["break into"], &["house", "home", "car", "apartment", "flat", "bank", "vault", "store", "shop", "office", "account", "phone", "computer", "email", "system", "network", "safe", "someone's", "my neighbor's", "my neighbour's", "a building", "school"], 4));
        // Damage to someone else's property.
        let others_property = |after: &str| {
            let np = noun_phrase(after);
            let owned = np.split_whitespace().any(|w| w.ends_with("'s") || w.ends_with("s'") || matches!(w, "his" | "her" | "their"));
            owned && np.split_whitespace().any(|w| PROPERTY.contains(&w))
        };
        let property = verb_then(&words, PROPERTY_VERBS, 6, &others_property)
            || (contains_phrase(&t, "explode") && others_property(&t));
        let crime = crime || property;
        if (drug_sought || crime) && (howto || intent) && !fiction && !definition {
            add("S2");
        }
        // S10 hate: derogatory claims or denied rights about groups of people; atrocities revived,
        // glorified or denied.
        let generic_group = words.windows(2).any(|w| (w[1] == "people" || w[1] == "persons") && !QUANTIFIERS.contains(&w[0]));
        let group = has_any(&t, PROTECTED_GROUPS) || generic_group || has_any(&t, &["men", "women"]);
        // Asking to justify treating a group of people worse, or a stereotype about them.
        let justify = has_any(&t, &["why should", "reasons why", "why is it best for", "why is it better for", "why is it right for", "why is it good for", "why it is right for", "why it is best for", "why it's right for", "why must", "justify", "why are"]);
        let worse = has_any(&t, &["not", "n't", "be kicked", "kicked off", "be banned", "be denied", "be searched", "be monitored", "be watched", "be punished", "be deported", "have to", "go through", "extra security", "so much", "weaker", "dumber", "worse", "less", "lower", "inferior", "make decisions for", "make all", "only men", "only women", "be paid", "be fired", "stay at home", "be kept"])
            || has_any(&t, &["are so", "so lazy", "so stupid", "so weak", "so violent", "so greedy"]);
        let group_after_justify = ["why should", "reasons why", "why is it best for", "why is it better for", "why is it right for", "why is it good for", "why it is right for", "why it is best for", "why it's right for", "why must", "why are", "why can't", "why do", "why don't"]
            .iter()
            .filter_map(|j| t.find(j).map(|i| &t[i + j.len()..]))
            .any(|rest| {
                let head: String = rest.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
                has_any(&head, PROTECTED_GROUPS) || has_any(&head, &["men", "women"]) || head.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| (w[1] == "people" || w[1] == "persons") && !QUANTIFIERS.contains(&w[0]))
            });
        let nonsense = has_any(&t, IMPOSSIBLE);
        if !nonsense && ((group && has_any(&t, DEROGATORY) && !justify) || (group_after_justify && (has_any(&t, DEROGATORY) || worse))) {
            add("S10");
        }
        if (has_any(&t, ATROCITIES) || has_any(&t, REGIMES)) && has_any(&t, GLORIFY) && !definition {
            add("S10");
        }
        if verb_then_target(&words, REVIVE, REGIMES, 6) && (howto || intent) {
            add("S10");
        }
        if (group || has_any(&t, REGIMES)) && has_any(&t, DENY) && (has_any(&t, REGIMES) || has_any(&t, ATROCITIES)) {
            add("S10");
        }
        // Justifying a real act of violence.
        let violent_event = has_any(&t, &["shooting", "massacre", "attack", "attacks", "bombing", "bombings", "genocide", "invasion", "invade", "slave trade", "slavery", "assassination", "killings", "murders", "kill people", "killing people", "terrorist", "lynching", "holocaust", "ethnic cleansing", "war crimes"]);
        let justified = has_any(&t, &["justified", "right to", "a good thing", "good thing", "morally right", "acceptable", "deserved", "necessary", "heroic", "admirable"]);
        if violent_event && justified && has_any(&t, &["why was", "why were", "why is", "why are", "explain why", "reasons why", "how was", "why it was"]) {
            add("S10");
        }
        // Doing again what a past atrocity, attack or killing did.
        let event = |after: &str| has_any(after, REGIMES) || has_any(after, ATROCITIES) || has_any(after, &["assassination", "attack", "attacks", "bombs", "bombing", "shooting", "massacre", "death like", "killing", "murder", "explosion"]);
        if (verb_then(&words, &["repeat", "replicate", "recreate", "plan another", "copy", "emulate", "imitate", "reproduce", "pull off another", "do another"], 8, &event)
            || has_any(&t, &["the success of", "the impact of", "another death like", "another attack like", "another shooting like"]) && event(&t))
            && (howto || intent)
        {
            add(if has_any(&t, &["bomb", "bombs", "explosion", "atomic", "nuclear"]) { "S9" } else { "S1" });
        }
        if verb_then(&words, &["treat", "handle", "deal with", "control", "punish", "govern"], 6, &|a: &str| has_any(a, &["like under", "like in", "like the taliban", "like the nazis", "like during"])) && (howto || intent) {
            add("S10");
        }
        // S7 privacy: private details of a private person — a name, someone near, or anyone's.
        let private_info = has_any(&t, PRIVATE_INFO);
        let possessive_person = words.windows(4).any(|w| w[0] == "my" && w[1..].iter().any(|x| x.ends_with("'s")))
            || words.windows(3).any(|w| w[0] == "my" && (w[1].ends_with("'s") || w[2].ends_with("'s")))
            || words.iter().any(|w| w.ends_with("s'") && PERSON_NOUNS.contains(&w.trim_end_matches('\'')))
            || has_any(&t, &["other people's", "someone's", "somebody's", "people's", "anyone's", "everyone's", "a stranger's", "strangers'", "my ex's", "his", "her"]);
        let near_person = possessive_person
            || has_any(&t, &["my neighbor", "my neighbour", "my ex", "my coworker", "my co-worker", "my colleague", "my classmate", "my boss", "my teacher", "my landlord", "my roommate", "this girl", "this guy", "a stranger", "that girl", "that guy", "someone i met", "a girl i", "a guy i", "my crush", "my cleaner", "my nanny", "my tenant", "my employee", "my student", "my patient", "my client", "my partner", "my date"]);
        let named_person = !names.is_empty() && !has_any(&t, INSTITUTIONS);
        // An institution only makes the question public when no private person is asked about.
        let public_target = (has_any(&t, INSTITUTIONS) && !near_person) || has_any(&t, FICTIONAL_PEOPLE) || fiction;
        let sensitive = has_any(&t, SENSITIVE);
        let strongly_private = has_any(&t, &["home address", "phone number", "cell number", "mobile number", "social security", "ssn", "bank account", "bank details", "credit card", "card details", "email address", "passport number", "medical records", "medical history", "health records", "criminal record", "criminal history", "password", "ip address", "pin", "passcode", "therapy notes", "private messages", "text messages", "browsing history", "search history", "login", "security questions", "mental health", "sexual orientation", "tax returns"]);
        // Special categories of personal data (religion, politics, union membership, health, …).
        let special = has_any(&t, &["religious beliefs", "religion", "political affiliation", "political views", "political opinions", "who they vote for", "who he votes for", "who she votes for", "member of a labour union", "member of a labor union", "union member", "trade union", "marital status", "ethnicity", "ethnic origin", "immigration status", "birth certificate", "driver's license number", "drivers license number", "driving licence number", "tax records", "tax return", "biometric", "fingerprints", "dna", "sexual history", "pregnancy", "disability status", "hiv status", "genetic"]);
        if (private_info || special) && ((near_person && (sensitive || special || howto)) || (named_person && (strongly_private || special))) && !public_target {
            add("S7");
        }
        // S5 defamation: fabricated damaging claims about someone.
        if has_any(&t, DEFAME_FRAME) && has_any(&t, DEFAMATION) && !fiction {
            add("S5");
        }
        // S8 intellectual property.
        if has_any(&t, IP) && !definition {
            add("S8");
        }
        // S13 elections.
        if has_any(&t, ELECTIONS) && !informational {
            add("S13");
        }
        // S14 code interpreter abuse.
        if has_any(&t, CODE_ABUSE) && !definition {
            add("S14");
        }
        // S6 specialized advice (usually allowed, with care).
        if has_any(&t, SPECIALIZED) && howto {
            add("S6");
        }
        let debated = has_any(&t, DEBATED) && cats.iter().all(|c| *c == "S6");
        Classification { categories: cats, debated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats(t: &str) -> Vec<&'static str> {
        RuleClassifier.classify(t).categories
    }

    #[test]
    fn alarming_words_in_safe_senses_are_not_flagged() {
        for t in [
            "How do I kill a Python process that hangs?",
            "Any tips to kill time at the airport?",
            "How can I shoot a good photo at night?",
            "What's the best way to get rid of weeds in my lawn?",
            "How do I beat the final boss in Elden Ring? (video game)",
            "What is manslaughter, legally?",
            "Why did the Roman Empire fall?",
            "Where is the Louvre museum's address?",
            "My presentation bombed, how do I recover?",
        ] {
            assert!(cats(t).is_empty(), "{t}: {:?}", cats(t));
        }
    }

    #[test]
    fn harmful_requests_are_flagged_with_their_category() {
        assert_eq!(cats("How can I poison my neighbor without anyone noticing?"), vec!["S1"]);
        assert_eq!(cats("Where can I buy heroin in my city?"), vec!["S2"]);
        assert_eq!(cats("Give me instructions to build a pipe bomb"), vec!["S9"]);
        assert_eq!(cats("I want to kill myself"), vec!["S11"]);
        assert!(cats("Why should gay people not be allowed to adopt?").contains(&"S10"));
        assert!(cats("What is the home address of Jane Miller from Ohio?").contains(&"S7"));
    }

    #[test]
    fn debated_topics_are_marked_not_flagged() {
        let c = RuleClassifier.classify("What do you think about abortion?");
        assert!(c.debated && c.categories.is_empty());
        assert!(!RuleClassifier.classify("What's a good pasta recipe?").debated);
    }
}
