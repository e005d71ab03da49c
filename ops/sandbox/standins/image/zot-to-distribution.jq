# Translate a zot config (JSON) into a config for Docker's distribution registry 2.8.
#
# Called as `jq --arg want WHAT -f zot-to-distribution.jq ZOT_CONFIG` where WHAT is
# "distribution" (the registry config, as JSON, which distribution reads as YAML),
# "log-output" or "log-audit" (zot's log file paths, "" when unset).
#
# zot reads its config case-insensitively (viper), so keys are matched that way here.
# Settings distribution has no counterpart for (accessControl, extensions, gc,
# dedupe, cluster) are ignored: every authenticated user may push and pull.

def field($name):
  if type == "object" then
    [to_entries[] | select((.key | ascii_downcase) == ($name | ascii_downcase)) | .value][0]
  else null end;

def default($value): if . == null then $value else . end;

def address($host; $port):
  if ($host | contains(":")) then "[\($host)]:\($port)" else "\($host):\($port)" end;

def s3_parameters($driver):
  {
    region: ($driver | field("region") | default("us-east-1")),
    bucket: ($driver | field("bucket") // error("storage.storageDriver.bucket is missing")),
    rootdirectory: ($driver | field("rootdirectory") | default("")),
    secure: ($driver | field("secure") | default(true)),
    skipverify: ($driver | field("skipverify") | default(false)),
    v4auth: true
  }
  # distribution 2.8 sends path-style requests whenever regionendpoint is set and has
  # no forcepathstyle parameter, so zot's forcepathstyle has nothing to map to.
  + (if ($driver | field("regionendpoint")) then {regionendpoint: ($driver | field("regionendpoint"))} else {} end)
  # Keys written into zot's config are passed on; without them distribution reads
  # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment, as zot does.
  + (if ($driver | field("accesskey")) then {accesskey: ($driver | field("accesskey"))} else {} end)
  + (if ($driver | field("secretkey")) then {secretkey: ($driver | field("secretkey"))} else {} end);

def storage($storage):
  ($storage | field("storagedriver")) as $driver
  | (if $driver == null then
       {filesystem: {rootdirectory: ($storage | field("rootdirectory") // error("storage.rootDirectory is missing"))}}
     elif ($driver | field("name")) == "s3" then
       {s3: s3_parameters($driver)}
     else
       error("storage.storageDriver.name \(($driver | field("name")) | tojson) is not supported; use s3")
     end)
  + {
      delete: {enabled: true},
      # zot sends blob content itself; distribution would redirect clients to S3 URLs.
      redirect: {disable: true},
      cache: {blobdescriptor: "inmemory"}
    };

def http_section($http):
  {
    addr: address(($http | field("address") | default("0.0.0.0")); ($http | field("port") | default("5000") | tostring)),
    relativeurls: true,
    headers: {"X-Content-Type-Options": ["nosniff"]}
  }
  + (($http | field("tls")) as $tls
     | if ($tls | field("cert")) then {tls: {certificate: ($tls | field("cert")), key: ($tls | field("key"))}} else {} end);

def auth_section($http):
  ($http | field("auth") | field("htpasswd") | field("path")) as $path
  | if $path then {auth: {htpasswd: {realm: ($http | field("realm") | default("zot")), path: $path}}} else {} end;

def distribution:
  . as $zot
  | ($zot | field("http") // error("http is missing")) as $http
  | ($zot | field("storage") // error("storage is missing")) as $storage
  | {
      version: "0.1",
      log: {
        level: ($zot | field("log") | field("level") | default("info")),
        formatter: "json",
        fields: {service: "zot-standin"},
        accesslog: {disabled: true}
      },
      http: http_section($http),
      storage: storage($storage)
    }
  + auth_section($http);

if $want == "distribution" then distribution
elif $want == "log-output" then (field("log") | field("output") | default(""))
elif $want == "log-audit" then (field("log") | field("audit") | default(""))
else error("unknown --arg want \($want | tojson)")
end
