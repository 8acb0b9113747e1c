package appservice

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"regexp/syntax"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/userapi"
)

// Registration is one application service, as its registration file
// describes it (the Application Service API's registration format).
type Registration struct {
	// File is the registration file it was read from.
	File string
	ID   string
	// URL is where the service listens; empty when the file says
	// url: null (the service wants no traffic).
	URL             string
	ASToken         string
	HSToken         string
	SenderLocalpart string
	// Sender is @sender_localpart:server_name.
	Sender string
	// RateLimited tells whether the requests the service makes as its
	// users are rate-limited (default true, as in Synapse); the sender's
	// own never are.
	RateLimited bool
	Protocols   []string
	// Ephemeral: push typing, receipts and presence (receive_ephemeral or
	// MSC2409's de.sorunome.msc2409.push_ephemeral).
	Ephemeral bool
	// MSC3202: push to-device messages and device list changes of the
	// service's users (org.matrix.msc3202).
	MSC3202 bool

	Users, Aliases, Rooms []Namespace
}

// Namespace is one regular expression of a namespace list.
type Namespace struct {
	Regex     string
	Exclusive bool
	re        *regexp.Regexp
}

// Match tells whether s is in the namespace. Like Synapse, the expression
// must match at the start of s, not necessarily all of it.
func (n Namespace) Match(s string) bool { return n.re.MatchString(s) }

// fileFormat is the YAML of a registration file.
type fileFormat struct {
	ID              string   `yaml:"id"`
	URL             *string  `yaml:"url"`
	ASToken         string   `yaml:"as_token"`
	HSToken         string   `yaml:"hs_token"`
	SenderLocalpart string   `yaml:"sender_localpart"`
	RateLimited     *bool    `yaml:"rate_limited"`
	Protocols       []string `yaml:"protocols"`
	Ephemeral       bool     `yaml:"receive_ephemeral"`
	EphemeralMSC    bool     `yaml:"de.sorunome.msc2409.push_ephemeral"`
	MSC3202         bool     `yaml:"org.matrix.msc3202"`
	Namespaces      struct {
		Users   []nsFormat `yaml:"users"`
		Aliases []nsFormat `yaml:"aliases"`
		Rooms   []nsFormat `yaml:"rooms"`
	} `yaml:"namespaces"`
}

type nsFormat struct {
	Regex     string `yaml:"regex"`
	Exclusive bool   `yaml:"exclusive"`
}

// configKey is the configuration key the problems are reported under.
const configKey = "app_services"

// Load reads the registration files named by app_services and checks
// them, alone and against each other. It returns every problem at once,
// in the configuration checker's form; the registrations are only usable
// when there is none.
func Load(files []string, serverName string) ([]*Registration, config.Problems) {
	var regs []*Registration
	var probs config.Problems
	for _, f := range files {
		r, ps := parseFile(f, serverName)
		probs = append(probs, ps...)
		if r != nil {
			regs = append(regs, r)
		}
	}
	probs = append(probs, crossCheck(regs, serverName)...)
	return regs, probs
}

func problem(file, why, fix string) config.Problem {
	return config.Problem{Key: configKey, Value: file, Why: why, Fix: fix}
}

func parseFile(file, serverName string) (*Registration, config.Problems) {
	data, err := os.ReadFile(file)
	if err != nil {
		why := err.Error()
		if pe, ok := err.(*os.PathError); ok {
			why = pe.Err.Error()
		}
		return nil, config.Problems{problem(file, "the registration file cannot be read: "+why,
			"give the path of the application service's registration file (the bridge writes one, e.g. registration.yaml), readable by the user running Haven")}
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, config.Problems{problem(file, "is not valid YAML: "+err.Error(), "correct the YAML syntax at the line named, or let the bridge generate the file again")}
	}
	var f fileFormat
	if err := yaml.Unmarshal(data, &f); err != nil {
		return nil, config.Problems{problem(file, "is not a registration file: "+err.Error(),
			"the file needs id, url, as_token, hs_token, sender_localpart and namespaces, as the Application Service API describes")}
	}
	var probs config.Problems
	add := func(why, fix string) { probs = append(probs, problem(file, why, fix)) }
	r := &Registration{File: file, ID: f.ID, ASToken: f.ASToken, HSToken: f.HSToken, SenderLocalpart: f.SenderLocalpart,
		Protocols: f.Protocols, Ephemeral: f.Ephemeral || f.EphemeralMSC, MSC3202: f.MSC3202}
	r.RateLimited = f.RateLimited == nil || *f.RateLimited
	for _, k := range []struct{ key, val string }{{"id", f.ID}, {"as_token", f.ASToken}, {"hs_token", f.HSToken}, {"sender_localpart", f.SenderLocalpart}} {
		if strings.TrimSpace(k.val) == "" {
			add("has no "+k.key, "add "+k.key+": to the file (the bridge's own configuration names it; tokens are long random strings)")
		}
	}
	if f.ASToken != "" && f.ASToken == f.HSToken {
		add("as_token and hs_token are the same", "give each its own random value (e.g. `openssl rand -hex 32`): the homeserver and the service must not be able to act as each other")
	}
	if _, ok := raw["url"]; !ok {
		add("has no url", "add url: with the address the service listens on, such as http://127.0.0.1:29317, or url: null if it needs no traffic")
	} else if f.URL != nil && *f.URL != "" {
		u, err := url.Parse(*f.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("url "+*f.URL+" is not an http(s) URL", "write the address the service listens on, such as http://127.0.0.1:29317")
		} else {
			r.URL = strings.TrimRight(*f.URL, "/")
		}
	}
	if f.SenderLocalpart != "" {
		if err := userapi.ValidLocalpart(f.SenderLocalpart, serverName); err != nil {
			add("sender_localpart "+f.SenderLocalpart+" is not a valid user name", "use lower-case letters, digits and . _ = - / + only, such as _bridge_bot")
		}
		r.Sender = "@" + f.SenderLocalpart + ":" + serverName
	}
	var ok bool
	if r.Users, ok = compileList(f.Namespaces.Users, "users", add); !ok {
		r.Users = nil
	}
	if r.Aliases, ok = compileList(f.Namespaces.Aliases, "aliases", add); !ok {
		r.Aliases = nil
	}
	if r.Rooms, ok = compileList(f.Namespaces.Rooms, "rooms", add); !ok {
		r.Rooms = nil
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return r, nil
}

func compileList(list []nsFormat, kind string, add func(why, fix string)) ([]Namespace, bool) {
	out := make([]Namespace, 0, len(list))
	ok := true
	for _, n := range list {
		if n.Regex == "" {
			add("a namespaces."+kind+" entry has no regex", "give each entry a regex, such as \"@_bridge_.*:example\\\\.com\"")
			ok = false
			continue
		}
		re, err := regexp.Compile("^(?:" + n.Regex + ")")
		if err != nil {
			add(fmt.Sprintf("namespaces.%s regex %q is not a valid regular expression: %v", kind, n.Regex, err),
				"Haven reads RE2 syntax (as Go does): no look-ahead, look-behind or back-references; escape dots as \\\\.")
			ok = false
			continue
		}
		out = append(out, Namespace{Regex: n.Regex, Exclusive: n.Exclusive, re: re})
	}
	return out, ok
}

// crossCheck finds what is wrong between services: IDs or tokens used
// twice, and namespaces that overlap another service's exclusive one.
func crossCheck(regs []*Registration, server string) config.Problems {
	var probs config.Problems
	seen := map[string]string{}
	tokens := map[string]string{}
	for _, r := range regs {
		if prev, dup := seen[r.ID]; dup {
			probs = append(probs, problem(r.File, fmt.Sprintf("id %q is also the id of %s", r.ID, prev), "give every application service its own id"))
		}
		seen[r.ID] = r.File
		for _, t := range []string{r.ASToken, r.HSToken} {
			if prev, dup := tokens[t]; dup && prev != r.File {
				probs = append(probs, problem(r.File, "uses a token (as_token or hs_token) that "+prev+" uses too",
					"give every service its own random tokens; a token names the service that uses it"))
			}
			tokens[t] = r.File
		}
	}
	for i, a := range regs {
		for _, b := range regs[i+1:] {
			for _, k := range []struct {
				kind  string
				x, y  []Namespace
				valid func(string) bool
			}{{"users", a.Users, b.Users, ids.ValidUserID}, {"aliases", a.Aliases, b.Aliases, ids.ValidRoomAlias}, {"rooms", a.Rooms, b.Rooms, validRoomID}} {
				for _, x := range k.x {
					for _, y := range k.y {
						if (x.Exclusive || y.Exclusive) && overlap(x, y, k.valid, server) {
							probs = append(probs, problem(b.File, fmt.Sprintf("namespaces.%s regex %q overlaps %q of %s, and one of them is exclusive", k.kind, y.Regex, x.Regex, a.File),
								"an exclusive namespace belongs to one service: make the expressions disjoint (for example different prefixes such as @_irc_ and @_slack_), or make both non-exclusive"))
						}
					}
				}
			}
		}
	}
	return probs
}

// overlap tells whether two namespaces share an ID. Whether two regular
// expressions match a common string is costly to decide in general; this
// checks what real registrations do: the same expression, or an ID both
// match among examples of each (its shortest match, and one with each
// repetition taken once), their concatenations (the expressions match at
// the start, so "@_irc_.*" takes any tail), each also with this server's
// name appended.
func overlap(a, b Namespace, valid func(string) bool, server string) bool {
	if a.Regex == b.Regex {
		return true
	}
	ea, eb := examples(a.Regex), examples(b.Regex)
	cands := append(append([]string{}, ea...), eb...)
	for _, x := range ea {
		for _, y := range eb {
			if x != "" && y != "" {
				cands = append(cands, x+y[1:], y+x[1:]) // the second without its sigil
			}
		}
	}
	for _, s := range cands {
		for _, c := range []string{s, s + ":" + server} {
			if valid(c) && a.Match(c) && b.Match(c) {
				return true
			}
		}
	}
	return false
}

func validRoomID(s string) bool {
	_, _, ok := ids.Split(s, '!')
	return ok
}

// examples gives strings that a regular expression matches.
func examples(expr string) []string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	re = re.Simplify()
	var out []string
	for _, once := range []bool{false, true} {
		var b strings.Builder
		if example(re, &b, once) {
			out = append(out, b.String())
		}
	}
	return out
}

func example(re *syntax.Regexp, b *strings.Builder, once bool) bool {
	switch re.Op {
	case syntax.OpLiteral:
		b.WriteString(string(re.Rune))
	case syntax.OpCharClass:
		if len(re.Rune) == 0 {
			return false
		}
		b.WriteRune(re.Rune[0])
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		b.WriteByte('a')
	case syntax.OpCapture:
		return example(re.Sub[0], b, once)
	case syntax.OpConcat:
		for _, s := range re.Sub {
			if !example(s, b, once) {
				return false
			}
		}
	case syntax.OpAlternate:
		return example(re.Sub[0], b, once)
	case syntax.OpStar, syntax.OpQuest:
		if once {
			return example(re.Sub[0], b, once)
		}
	case syntax.OpPlus:
		return example(re.Sub[0], b, once)
	case syntax.OpRepeat:
		n := re.Min
		if once && n == 0 {
			n = 1
		}
		for i := 0; i < n; i++ {
			if !example(re.Sub[0], b, once) {
				return false
			}
		}
	case syntax.OpNoMatch:
		return false
	}
	return true
}
