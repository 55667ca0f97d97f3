"""The one Lloyd loop and what it is parameterised by: data sources, communicators, pass strategies; inits."""
