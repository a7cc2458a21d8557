// Package apierr writes JSON responses and the OpenAI-style error envelope that every
// Venna HTTP surface answers with: {"error": {"code", "message", "param", "type"}}.
package apierr

import (
	"encoding/json"
	"net/http"
)

// Body is the error envelope.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the envelope's content; Param names the offending parameter or is null.
type Detail struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Type    string  `json:"type"`
}

// Write sends status with the envelope. An empty param is written as null.
func Write(w http.ResponseWriter, status int, typ, code, msg, param string) {
	d := Detail{Code: code, Message: msg, Type: typ}
	if param != "" {
		d.Param = &param
	}
	JSON(w, status, Body{Error: d})
}

// JSON sends v as JSON with status.
func JSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal_error","message":"encoding the response failed","param":null,"type":"server_error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
