// The configured connections as the gateway uses them: each [[connection]] with the IKE SA's
// view of it (ike::ConnectionParams: identities, PSK, parsed proposals and selectors), and the
// two lookups a responder needs — by the peer's address at IKE_SA_INIT, by its identity at
// IKE_AUTH. Replaced whole on reload; IKE SAs keep the params they were created with until
// the gateway hands them the new ones.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "spigot/config/config.h"
#include "spigot/ike/ike_sa.h"
#include "spigot/io/endpoint.h"
#include "spigot/radius/client.h"

namespace spigot::gateway {

// A configured selector (CIDR) as IKE's address range.
ike::TrafficSelector ToSelector(const config::TrafficSelector& t);

struct Connection {
  config::ConnectionConfig cfg;
  std::shared_ptr<ike::ConnectionParams> params;
};

class Connections {
 public:
  // Builds every connection of `config`; on error leaves the current set as it was and says
  // which connection and why ("<path>: connection 'x': bad local_id or remote_id").
  // `radius` is the client of remote_auth = "eap-radius" (nullptr: none configured).
  bool Apply(const config::Config& config, const std::string& path, std::shared_ptr<radius::Client> radius,
             std::string* error);

  const Connection* Find(const std::string& name) const;
  // IKE_SA_INIT from `from`: the connection listing that address, else the first "%any" one.
  const Connection* ForAddress(const io::Endpoint& from) const;
  // IKE_AUTH: an exact identity beats a "%any" connection.
  std::shared_ptr<const ike::ConnectionParams> ForPeer(const ike::Identity& peer) const;

  const std::map<std::string, Connection>& all() const { return by_name_; }

 private:
  std::map<std::string, Connection> by_name_;
};

}  // namespace spigot::gateway
