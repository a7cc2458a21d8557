package api

import "sort"

// UIFiles lists the URL paths the usage page is served from, sorted.
func UIFiles() []string {
	var out []string
	for rel := range uiAssets {
		if rel == "index.html" {
			out = append(out, "/")
		} else {
			out = append(out, "/ui/"+rel)
		}
	}
	sort.Strings(out)
	return out
}
