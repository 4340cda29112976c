use super::*;
use crate::domain::AgentId;

fn agent(id: i64, name: Option<&str>, email: Option<&str>) -> AgentRef {
    AgentRef {
        id: AgentId(id),
        name: name.map(str::to_string),
        email: email.map(str::to_string),
        role: Some("agent".into()),
    }
}

fn department(id: i64, name: Option<&str>, agents: &[i64]) -> DepartmentRef {
    DepartmentRef {
        id,
        name: name.map(str::to_string),
        agents: agents.iter().copied().map(AgentId).collect(),
    }
}

#[test]
fn slugs_are_bare_keys_or_nothing() {
    assert_eq!(slug("Anna Smith").as_deref(), Some("anna-smith"));
    assert_eq!(slug("José Ñúñez").as_deref(), Some("jose-nunez"));
    assert_eq!(slug("  R2-D2!! ").as_deref(), Some("r2-d2"));
    assert_eq!(slug("Олена"), None);
    assert_eq!(slug(" - "), None);
    let long = slug(&"abcdefghij ".repeat(10)).unwrap();
    assert!(long.len() <= 32 && !long.ends_with('-'), "{long}");
}

#[test]
fn names_are_unique_short_and_never_reserved() {
    let agents = [
        agent(1, Some("Anna Smith"), None),
        agent(2, Some("Anna Jones"), None),
        agent(3, Some("Bob Marley"), None),
        agent(4, Some("Олена"), Some("olena.k@example.com")),
        agent(5, None, None),
        agent(6, Some("None"), None),
        agent(7, Some("Team"), None),
        agent(8, Some("Bob"), None),
        agent(9, Some("Anna  Smith"), None),
    ];
    assert_eq!(
        agent_names(&agents),
        [
            "anna-smith",
            "anna-jones",
            "bob-marley",
            "olena-k",
            "agent-5",
            "none-2",
            "team-2",
            "bob",
            "anna-smith-2",
        ]
    );
}

fn team(departments: Departments) -> Team {
    let agents = [
        agent(4761, Some("Bob"), Some("bob@example.com")),
        agent(4188, Some("Alice\nEvil = 1"), None),
    ];
    Team::new(&agents, &departments)
}

fn load(text: &str) -> crate::rules::Rules {
    crate::rules::load_sources(&[("10-team.toml".into(), text.to_string())])
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn the_rules_load_with_and_without_their_examples() {
    let listed = Departments::Listed(vec![
        department(1, Some("Billing"), &[4188, 999]),
        department(2, Some("Team"), &[]),
        department(3, Some("Q&A?"), &[]),
        department(4, None, &[4761]),
    ]);
    let t = team(listed);
    let plain = load(&rules_text(&t, "Europe/Kyiv", false));
    assert_eq!(plain.rules.len(), 1);
    assert_eq!(plain.pools.len(), 1);
    let names: Vec<&str> = plain.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let text = rules_text(&t, "Europe/Kyiv", true);
    let live = load(&text);
    let rules: Vec<&str> = live.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        rules,
        [
            "billing",
            "team-2",
            "q-a",
            "department-4",
            "after-hours",
            "everyone"
        ]
    );
    assert!(text.contains("match = { department = 3 }"), "{text}");
    assert!(
        text.contains("[pools.billing]\nagents = [\"alice\"]"),
        "{text}"
    );
    assert_eq!(live.pools.len(), 3);
}

#[test]
fn an_account_without_departments_says_why() {
    let t = team(Departments::Unavailable(
        "GET /departments answered 404".into(),
    ));
    let text = rules_text(&t, "UTC", true);
    load(&text);
    assert!(
        text.contains("# The account lists no departments (GET /departments answered 404)."),
        "{text}"
    );
    let none = rules_text(&team(Departments::Listed(vec![])), "UTC", false);
    assert!(none.contains("# The account has no departments."), "{none}");
}

#[test]
fn the_config_loads_and_points_at_the_files() {
    let dir = Path::new("/srv/assignd");
    let layout = Layout::new(dir, None);
    let text = config_text(&layout, "https://api.helpcrunch.com/v1");
    let config = crate::config::Config::parse(&layout.config, &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.rules.path, Path::new("/srv/assignd/rules"));
    assert_eq!(
        config.helpcrunch.api_key_file.as_deref(),
        Some(Path::new("/srv/assignd/credentials/helpcrunch-api-key"))
    );
    assert_eq!(config.http.listen.map(|a| a.port()), Some(9187));
    let given = Layout::new(dir, Some("/root/key".into()));
    assert_eq!(given.api_key_file, Path::new("/root/key"));
}
