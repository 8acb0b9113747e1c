package server

import (
	"fmt"

	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/ldap"
)

// directory is the company directory that checks passwords (config ldap);
// the zero options when it is off.
func (a *App) directory() (userapi.DirectoryOptions, error) {
	c := a.Cfg.LDAP
	if !c.Enabled {
		return userapi.DirectoryOptions{}, nil
	}
	d, err := ldap.New(c)
	if err != nil {
		return userapi.DirectoryOptions{}, fmt.Errorf("company directory: %w", err)
	}
	return userapi.DirectoryOptions{Directory: d, CreateAccounts: c.CreateAccounts,
		UpdateDisplayName: c.UpdateDisplayName, FallbackLocalPasswords: c.FallbackLocalPasswords}, nil
}
