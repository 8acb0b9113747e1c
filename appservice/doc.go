// Package appservice serves application services (bridges and bots that
// act for many users), as the Matrix Application Service API defines them.
//
// Registration (registration.go): the files named by app_services are read
// and checked, alone and against each other, into config.Problems that
// `haven check-config` prints and that stop a start. Registry (registry.go)
// answers the namespace questions: which service a token is, which holds a
// user ID or alias exclusively, who may act as whom. Namespace expressions
// match from the start of an ID, as in Synapse.
//
// Tables owned: none yet.
//
// Goroutines: none yet.
//
// Locks: none; the Registry never changes after it is made.
package appservice
