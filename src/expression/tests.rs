use super::*;

/// Runs `f` on a thread with a tokio worker's stack (2 MiB): what must not overflow there.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(2 * 1024 * 1024).spawn(f).unwrap().join().unwrap()
}

fn refused(source: &str) -> ExpressionError {
    match compile(source) {
        Ok(_) => panic!("{source:?} was admitted"),
        Err(e) => e,
    }
}

fn nested(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

#[test]
fn the_stack_overflowing_expressions_of_the_issue_are_refused_before_parsing() {
    let parens = format!("user == null ? {} : 0", nested("(", "1", ")", 55));
    assert!(parens.len() < 140);
    assert_eq!(refused(&parens), ExpressionError::TooDeep(223));
    let lists = nested("[", "", "]", 90);
    assert_eq!(refused(&lists), ExpressionError::TooDeep(450));
    let message = refused(&lists).to_string();
    assert!(message.contains("nests 450 deep") && message.contains("at most 28"), "{message}");
}

/// Families of expressions that nest by `k`.
fn deep_families() -> Vec<fn(usize) -> String> {
    vec![
        |k| nested("(", "1", ")", k),
        |k| nested("[", "1", "]", k),
        |k| nested("{1: ", "1", "}", k),
        |k| nested("size(", "'a'", ")", k),
        |k| nested("[1].exists(x, ", "true", ")", k),
        |k| nested("[1].map(x, ", "x", ")", k),
        |k| nested("!(", "true", ")", k),
        |k| nested("-(", "1", ")", k),
        |k| format!("1{}", " + 1".repeat(k)),
        |k| format!("1{}", " - 1".repeat(k)),
        |k| format!("1{}", " * 1".repeat(k)),
        |k| format!("1{}", " == 1".repeat(k)),
        |k| format!("1{}", " < 1".repeat(k)),
        |k| format!("1{}", " in [1]".repeat(k)),
        |k| format!("true{}", " ? true : false".repeat(k)),
        |k| format!("client{}", ".metadata".repeat(k)),
        |k| format!("client{}", ".size()".repeat(k)),
        |k| format!("[1]{}", "[0]".repeat(k)),
        |k| format!("{}1{}", "(1 + ".repeat(k), ")".repeat(k)),
        |k| format!("{}1{}", "[1 + ".repeat(k), "]".repeat(k)),
        |k| format!("has(client{}.id)", ".metadata".repeat(k)),
        |k| format!("true{}", " && true".repeat(k)),
        |k| format!("false{}", " || false".repeat(k)),
    ]
}

/// The deepest expression of each family that the scan admits.
fn deepest_admitted() -> Vec<String> {
    deep_families()
        .into_iter()
        .map(|family| {
            let mut k = 1;
            while k < 1000 && family(k + 1).len() <= MAX_LENGTH && nesting(&family(k + 1)).unwrap() <= MAX_NESTING {
                k += 1;
            }
            family(k)
        })
        .collect()
}

#[test]
fn the_deepest_admitted_expressions_compile_and_evaluate_on_a_2_mib_stack() {
    for source in deepest_admitted() {
        let s = source.clone();
        let outcome = on_small_stack(move || {
            let program = cel::Program::compile(&s).map_err(|e| e.to_string())?;
            let _ = program.execute(&cel::Context::default());
            drop(program);
            compile(&s).map(|_| ()).map_err(|e| e.to_string())
        });
        // Parsed, evaluated and dropped without overflowing; admitted, or refused for cost.
        if let Err(e) = outcome {
            assert!(e.contains("comprehensions") || e.contains("cost"), "{source}: {e}");
        }
    }
}

#[test]
fn one_level_more_than_the_limit_is_refused() {
    for source in deepest_admitted() {
        assert!(nesting(&source).unwrap() <= MAX_NESTING);
    }
    let brackets = (MAX_NESTING / BRACKET_WEIGHT) as usize;
    assert!(compile(&nested("(", "1", ")", brackets)).is_ok());
    assert!(matches!(refused(&nested("(", "1", ")", brackets + 1)), ExpressionError::TooDeep(_)));
    let ops = MAX_NESTING as usize;
    assert!(compile(&format!("1{}", " + 1".repeat(ops))).is_ok());
    assert!(matches!(refused(&format!("1{}", " + 1".repeat(ops + 1))), ExpressionError::TooDeep(_)));
    assert!(matches!(refused(&format!("client{}", ".id".repeat(ops + 1))), ExpressionError::TooDeep(_)));
    assert!(matches!(refused(&format!("[1]{}", "[0]".repeat(ops))), ExpressionError::TooDeep(_)));
}

#[test]
fn brackets_inside_string_literals_and_comments_do_not_count() {
    let deep = "(".repeat(200);
    for source in [
        format!("user.name == '{deep}'"),
        format!("user.name == \"{deep}\""),
        format!("user.name == '''{deep}\n'' ' '''"),
        format!("user.name == \"\"\"{deep}\"\"\""),
        format!("user.name == r'{deep}\\'"),
        format!("user.name == R\"\"\"{deep}\\\"\"\""),
        format!("string(b'{deep}') == user.name"),
        format!("string(BR'{deep}\\') == user.name"),
        format!("user.name == 'it\\'s {deep}'"),
        format!("user.name == '\\x41\\u0042\\U00000043\\101 {deep}'"),
        format!("// {deep}\nuser.name == 'a'"),
        format!("user.name == 'a' // {deep}"),
    ] {
        assert!(compile(&source).is_ok(), "{source}: {:?}", compile(&source).err());
    }
}

#[test]
fn what_cel_would_read_differently_is_refused() {
    let deep = "(".repeat(100);
    for source in [
        format!("'{deep}"),
        format!("'a\\q' + {deep}"),
        format!("'a\n{deep}'"),
        format!("r'a\n{deep}'"),
        format!("'''{deep}"),
        format!("'\\x4' {deep}"),
        "user # 1".to_owned(),
        "`a".to_owned(),
    ] {
        assert!(
            matches!(compile(&source), Err(ExpressionError::Lexical(_) | ExpressionError::TooDeep(_))),
            "{source:?}: {:?}",
            compile(&source).err()
        );
    }
}

#[test]
fn the_length_is_bounded_as_the_crd_bounds_it() {
    let long = format!("'{}'", "a".repeat(MAX_LENGTH));
    assert_eq!(refused(&long), ExpressionError::TooLong(MAX_LENGTH + 2));
}

#[test]
fn comprehensions_nest_at_most_two_deep() {
    // 181 characters, 10^6 inner evaluations: refused for its nesting.
    let ten = "[0,1,2,3,4,5,6,7,8,9]";
    let attack = format!("{ten}.map(a,{ten}.map(b,{ten}.map(c,{ten}.map(d,{ten}.map(e,{ten}.map(f,1))))))");
    assert!(matches!(refused(&attack), ExpressionError::TooDeep(_) | ExpressionError::ComprehensionsTooDeep(6)));
    let three = "user.groups.exists(a, user.groups.exists(b, user.groups.exists(c, a == c)))";
    assert_eq!(
        refused(three).to_string(),
        "nests comprehensions (all, exists, exists_one, map, filter) 3 deep; at most 2"
    );
    // Side by side, or one over another's result, is not nesting.
    assert!(compile("request.scopes.map(s, s).filter(s, s != '').exists(s, s == 'a')").is_ok());
}

#[test]
fn the_estimate_refuses_what_multiplies_the_largest_lists() {
    let e = refused("user.groups.map(g, user.groups.map(h, g + h))");
    assert!(matches!(e, ExpressionError::TooCostly { .. }), "{e:?}");
    let message = e.to_string();
    assert!(message.contains("estimated cost of") && message.contains("user.groups 256"), "{message}");
    // Concatenation inside a comprehension grows with every level.
    assert!(matches!(
        refused("request.scopes.map(a, request.scopes.map(b, user.groups + user.groups))"),
        ExpressionError::TooCostly { .. }
    ));
    assert!(matches!(refused("subject.all(k, subject.all(j, k == j))"), ExpressionError::TooCostly { .. }));
}

#[test]
fn the_expressions_of_the_examples_and_the_docs_are_admitted() {
    for source in [
        "has(client.metadata.tenant) ? client.metadata.tenant : null",
        "client.namespace",
        "user == null ? null : user.groups",
        "request.scopes.size() <= 3",
        "'admins' in user.groups",
        "user.groups.exists(g, g.startsWith('team-'))",
        "user.groups.filter(g, g.startsWith('team-'))",
        "request.scopes.map(s, s + '@' + client.namespace)",
        "request.scopes.all(s, s.startsWith('payments:')) && client.metadata.tier == 'gold'",
        "request.scopes.exists(s, s in request.audience)",
        "user.email.matches('^[a-z]+@example[.]com$')",
        "has(subject.groups) && 'admins' in subject.groups",
        "{'tenant': client.metadata.tenant, 'groups': user.groups}",
    ] {
        assert!(
            compile(source).is_ok(),
            "{source}: {}",
            compile(source).err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
}

#[test]
fn matches_takes_a_small_literal_pattern() {
    assert!(matches!(refused("user.name.matches(user.email)"), ExpressionError::Regex(_)));
    assert!(matches!(refused("matches(user.name, client.metadata.re)"), ExpressionError::Regex(_)));
    assert!(matches!(refused(&format!("user.name.matches('{}')", "a".repeat(200))), ExpressionError::Regex(_)));
    let e = refused("user.name.matches('((a{100}){100}){100}')");
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(matches!(refused("user.name.matches('(')"), ExpressionError::Regex(_)));
}

/// A small deterministic generator (proptest is not in the dependency tree).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Depth of a parsed expression's tree.
fn ast_depth(e: &IdedExpr) -> u32 {
    let children: Vec<&IdedExpr> = match &e.expr {
        Expr::Call(c) => c.target.iter().map(|t| &**t).chain(c.args.iter()).collect(),
        Expr::Select(s) => vec![&*s.operand],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m
            .entries
            .iter()
            .flat_map(|en| match &en.expr {
                EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
                EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Comprehension(c) => vec![&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result],
        _ => vec![],
    };
    1 + children.into_iter().map(ast_depth).max().unwrap_or(0)
}

#[test]
fn random_expressions_never_overflow_a_2_mib_stack_and_the_scan_bounds_the_tree() {
    const PIECES: [&str; 34] = [
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "'",
        "\"",
        "'''",
        "r'",
        "b\"",
        "\\",
        "\\'",
        "\n",
        "//",
        " ",
        ",",
        ":",
        "?",
        "+",
        "-",
        "!",
        "==",
        "&&",
        "||",
        ".",
        "in ",
        "1",
        "user",
        ".map(x, ",
        ".exists(y, ",
        "size(",
        "x",
        "'a'",
    ];
    on_small_stack(|| {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = rng.next() % 120;
            let source: String = (0..len).map(|_| PIECES[(rng.next() % PIECES.len() as u64) as usize]).collect();
            let admitted = compile(&source);
            if let (Ok(program), Ok(depth)) = (&admitted, nesting(&source)) {
                let tree = ast_depth(program.expression());
                // A comprehension adds a few nodes of its own to each level.
                assert!(tree <= 4 * depth + 4, "{source:?}: tree {tree}, scan {depth}");
                let _ = program.execute(&cel::Context::default());
            }
        }
    });
}
