package userapi

import (
	_ "embed"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/haven-chat/haven/internal/merr"
)

// PasswordPolicy is what a new password must meet (config
// password_policy): at least MinLength characters and, with RefuseCommon,
// not a common password (common_passwords.txt) nor one of them with
// digits and symbols around it, nor only digits and symbols, nor fewer
// than four different characters. The zero value refuses nothing.
type PasswordPolicy struct {
	MinLength    int
	RefuseCommon bool
}

// commonPasswordsText is the list of common passwords, one a line, lower
// case (see the file's header for where it comes from).
//
//go:embed common_passwords.txt
var commonPasswordsText string

var (
	commonOnce sync.Once
	common     map[string]struct{}
)

func commonPasswords() map[string]struct{} {
	commonOnce.Do(func() {
		common = make(map[string]struct{}, 4096)
		for _, line := range strings.Split(commonPasswordsText, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			common[strings.ToLower(line)] = struct{}{}
		}
	})
	return common
}

// Check tells whether password meets the policy (M_WEAK_PASSWORD with the
// reason when it does not). It does not check the byte limit
// (ValidNewPassword does).
func (p PasswordPolicy) Check(password string) error {
	if n := utf8.RuneCountInString(password); p.MinLength > 0 && n < p.MinLength {
		return merr.WeakPassword("The password must have at least %d characters", p.MinLength)
	}
	if !p.RefuseCommon {
		return nil
	}
	if commonPassword(password) {
		return merr.WeakPassword("This password is too common and easy to guess; a few unrelated words make a strong one")
	}
	return nil
}

// commonPassword tells whether a password is common or a thin variant of
// a common one.
func commonPassword(password string) bool {
	lower := strings.ToLower(password)
	list := commonPasswords()
	if _, ok := list[lower]; ok {
		return true
	}
	distinct := map[rune]struct{}{}
	for _, r := range lower {
		distinct[r] = struct{}{}
	}
	if len(distinct) < 4 {
		return true
	}
	// Digits, symbols and spaces around a common word ("Password123!",
	// "2024summer") add little.
	core := strings.TrimFunc(lower, func(r rune) bool { return !unicode.IsLetter(r) })
	if core == "" {
		return true // only digits and symbols
	}
	if _, ok := list[core]; ok {
		return true
	}
	// Leetspeak of a common word ("p@ssw0rd").
	if _, ok := list[unleet(core)]; ok {
		return true
	}
	_, ok := list[strings.TrimFunc(unleet(lower), func(r rune) bool { return !unicode.IsLetter(r) })]
	return ok
}

var leet = strings.NewReplacer("0", "o", "1", "i", "3", "e", "4", "a", "5", "s", "7", "t", "@", "a", "$", "s", "!", "i")

func unleet(s string) string { return leet.Replace(s) }

// CheckNewPassword checks a password being set against the byte limit and
// the server's password policy: the check behind registration, password
// changes, create-user and admin resets (HashNewPassword calls it).
func (s *Service) CheckNewPassword(password string) error {
	if err := ValidNewPassword(password); err != nil {
		return err
	}
	return s.opts.PasswordPolicy.Check(password)
}
