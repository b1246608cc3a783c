#!/usr/bin/env bash
# Mint a demo JWT for the sample Envoy config's jwt_authn filter (config/samples/envoy.yaml):
#   hack/demo-token.sh TEAM [SIGNING_KEY]
# prints an RS256 token with issuer https://auth.semantic-router.example, audience
# semantic-router, claim `team: TEAM`, valid for one hour. The default key is the committed
# DEMO key (config/demo-jwt/demo-signing-key.pem), which matches the JWKS inlined in the
# sample config: anyone can mint tokens with it, so it is for the local stack and tests only.
# In a cluster, Envoy verifies tokens from your identity provider (jwt_authn remote_jwks).
set -euo pipefail
team=${1:?usage: hack/demo-token.sh TEAM [SIGNING_KEY]}
key=${2:-$(cd "$(dirname "$0")/.." && pwd)/config/demo-jwt/demo-signing-key.pem}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header='{"alg":"RS256","typ":"JWT","kid":"semantic-router-demo"}'
payload=$(printf '{"iss":"https://auth.semantic-router.example","aud":"semantic-router","sub":"demo-%s","team":"%s","iat":%d,"exp":%d}' \
  "$team" "$team" "$now" "$((now + 3600))")
signed="$(printf '%s' "$header" | b64url).$(printf '%s' "$payload" | b64url)"
signature=$(printf '%s' "$signed" | openssl dgst -sha256 -sign "$key" -binary | b64url)
printf '%s.%s\n' "$signed" "$signature"
