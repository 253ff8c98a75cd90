//! AWS regions and partitions as SNS uses them: which host serves a region's
//! signing certificates (`sns.<region>.<partition domain>`), which subject CN
//! those certificates carry, and which region a topic ARN lives in. The
//! table is the one in `reference/sns.md` ("Signing certificate names by
//! region"), as AWS's SDK for Java v2 applies it.

use std::fmt;

/// An AWS partition: its own DNS domain and its own name in ARNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    Aws,
    China,
    GovCloud,
    Iso,
    IsoB,
    IsoE,
    IsoF,
    EuropeanSovereignCloud,
}

impl Partition {
    const ALL: [Partition; 8] = [
        Partition::Aws,
        Partition::China,
        Partition::GovCloud,
        Partition::Iso,
        Partition::IsoB,
        Partition::IsoE,
        Partition::IsoF,
        Partition::EuropeanSovereignCloud,
    ];

    /// The partition of a region, by its leading words (AWS's own partition
    /// patterns); a region matching none of them is in `aws`.
    fn of(region: &str) -> Partition {
        let mut words = region.split('-');
        match (words.next(), words.next()) {
            (Some("cn"), _) => Partition::China,
            (Some("us"), Some("gov")) => Partition::GovCloud,
            (Some("us"), Some("iso")) => Partition::Iso,
            (Some("us"), Some("isob")) => Partition::IsoB,
            (Some("us"), Some("isof")) => Partition::IsoF,
            (Some("eu"), Some("isoe")) => Partition::IsoE,
            (Some("eusc"), _) => Partition::EuropeanSovereignCloud,
            _ => Partition::Aws,
        }
    }

    /// The partition's name in ARNs.
    pub fn arn_name(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::China => "aws-cn",
            Partition::GovCloud => "aws-us-gov",
            Partition::Iso => "aws-iso",
            Partition::IsoB => "aws-iso-b",
            Partition::IsoE => "aws-iso-e",
            Partition::IsoF => "aws-iso-f",
            Partition::EuropeanSovereignCloud => "aws-eusc",
        }
    }

    /// The DNS domain of the partition's endpoints.
    pub fn domain(self) -> &'static str {
        match self {
            Partition::Aws | Partition::GovCloud => "amazonaws.com",
            Partition::China => "amazonaws.com.cn",
            Partition::Iso => "c2s.ic.gov",
            Partition::IsoB => "sc2s.sgov.gov",
            Partition::IsoE => "cloud.adc-e.uk",
            Partition::IsoF => "csp.hci.ic.gov",
            Partition::EuropeanSovereignCloud => "amazonaws.eu",
        }
    }

    fn from_arn_name(name: &str) -> Option<Partition> {
        Partition::ALL.into_iter().find(|p| p.arn_name() == name)
    }
}

/// A region name of the right shape: letter-only words joined by dashes,
/// ending in a number (`us-east-1`, `us-gov-west-1`, `eusc-de-east-1`). The
/// shape alone rules out S3 website and legacy endpoints such as
/// `s3-external-1` or `s3-us-west-2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    name: String,
    partition: Partition,
}

impl Region {
    pub fn parse(text: &str) -> Result<Region, String> {
        let shaped = text.rsplit_once('-').is_some_and(|(words, number)| {
            !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
                && words
                    .split('-')
                    .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        });
        if !shaped {
            return Err(format!(
                "`{text}` is not a region name (lower-case words joined by dashes, ending in a number)"
            ));
        }
        Ok(Region {
            name: text.to_owned(),
            partition: Partition::of(text),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The subject CN of this region's SNS signing certificates.
    pub fn signing_name(&self) -> String {
        let region = self.name.as_str();
        let domain = self.partition.domain();
        match SIGNING_NAMES.iter().find(|(r, _)| *r == region) {
            Some((_, SigningName::Signing)) => format!("sns-signing.{region}.{domain}"),
            Some((_, SigningName::Dashed)) => format!("sns-{region}.{domain}"),
            Some((_, SigningName::Fixed(name))) => (*name).to_owned(),
            // Most regions, and every region not known yet.
            None => format!("sns.{domain}"),
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// How a region's signing certificate is named, when not `sns.<domain>`.
enum SigningName {
    /// `sns-signing.<region>.<domain>`
    Signing,
    /// `sns-<region>.<domain>`
    Dashed,
    /// One name for several regions.
    Fixed(&'static str),
}

/// The regions whose signing certificates are not named `sns.<domain>`.
const SIGNING_NAMES: [(&str, SigningName); 27] = [
    // Opt-in regions of the `aws` partition.
    ("af-south-1", SigningName::Signing),
    ("ap-east-1", SigningName::Signing),
    ("ap-east-2", SigningName::Signing),
    ("ap-south-2", SigningName::Signing),
    ("ap-southeast-3", SigningName::Signing),
    ("ap-southeast-4", SigningName::Signing),
    ("ap-southeast-5", SigningName::Signing),
    ("ap-southeast-6", SigningName::Signing),
    ("ap-southeast-7", SigningName::Signing),
    ("ca-west-1", SigningName::Signing),
    ("eu-central-2", SigningName::Signing),
    ("eu-south-1", SigningName::Signing),
    ("eu-south-2", SigningName::Signing),
    ("il-central-1", SigningName::Signing),
    ("me-central-1", SigningName::Signing),
    ("me-south-1", SigningName::Signing),
    ("mx-central-1", SigningName::Signing),
    // GovCloud: both regions sign with the west region's name.
    (
        "us-gov-west-1",
        SigningName::Fixed("sns-us-gov-west-1.amazonaws.com"),
    ),
    (
        "us-gov-east-1",
        SigningName::Fixed("sns-us-gov-west-1.amazonaws.com"),
    ),
    ("cn-north-1", SigningName::Dashed),
    ("cn-northwest-1", SigningName::Dashed),
    ("us-iso-east-1", SigningName::Dashed),
    ("us-isob-east-1", SigningName::Dashed),
    ("us-isof-east-1", SigningName::Signing),
    ("us-isof-south-1", SigningName::Signing),
    ("eu-isoe-west-1", SigningName::Signing),
    ("eusc-de-east-1", SigningName::Signing),
];

/// The host of a region's SNS endpoint, `sns.<region>.<partition domain>`,
/// where the domain is the one of the region's own partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsHost {
    region: Region,
}

impl SnsHost {
    /// `host` as the URL parser gives it (lower case).
    pub fn parse(host: &str) -> Result<SnsHost, String> {
        let not_sns = || format!("host `{host}` is not an Amazon SNS host");
        let rest = host.strip_prefix("sns.").ok_or_else(not_sns)?;
        let (region, domain) = rest.split_once('.').ok_or_else(not_sns)?;
        let region = Region::parse(region).map_err(|why| format!("{}: {why}", not_sns()))?;
        let expected = region.partition().domain();
        if domain != expected {
            return Err(format!(
                "{}: region {region} is served under {expected}",
                not_sns()
            ));
        }
        Ok(SnsHost { region })
    }

    pub fn region(&self) -> &Region {
        &self.region
    }
}

/// An SNS topic ARN, `arn:<partition>:sns:<region>:<account>:<name>`, whose
/// partition is its region's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicArn {
    region: Region,
}

impl TopicArn {
    pub fn parse(text: &str) -> Result<TopicArn, String> {
        let malformed =
            || format!("`{text}` is not an SNS topic ARN (arn:PARTITION:sns:REGION:ACCOUNT:NAME)");
        let parts: Vec<&str> = text.splitn(6, ':').collect();
        let [arn, partition, service, region, account, name] = parts[..] else {
            return Err(malformed());
        };
        if arn != "arn" || service != "sns" || account.is_empty() || name.is_empty() {
            return Err(malformed());
        }
        // A subscription's ARN is its topic's with `:<subscription id>`
        // after the name, and the console shows both side by side: a
        // copied subscription ARN would be accepted and then match no
        // message's TopicArn.
        if let Some((topic, _)) = text.rsplit_once(':')
            && name.contains(':')
            && TopicArn::parse(topic).is_ok()
        {
            return Err(format!(
                "`{text}` is a subscription ARN, not a topic ARN: give its topic's, `{topic}`"
            ));
        }
        if !is_topic_name(name) {
            return Err(format!(
                "{}: a topic name is 1 to 256 letters, digits, `-` and `_` (a FIFO topic's ends in `.fifo`)",
                malformed()
            ));
        }
        let partition = Partition::from_arn_name(partition)
            .ok_or_else(|| format!("{}: unknown partition `{partition}`", malformed()))?;
        let region = Region::parse(region).map_err(|why| format!("{}: {why}", malformed()))?;
        if region.partition() != partition {
            return Err(format!(
                "{}: region {region} is in partition {}, not {}",
                malformed(),
                region.partition().arn_name(),
                partition.arn_name()
            ));
        }
        Ok(TopicArn { region })
    }

    pub fn region(&self) -> &Region {
        &self.region
    }
}

/// SNS's rule for topic names: up to 256 ASCII letters, digits, hyphens and
/// underscores, a FIFO topic's followed by `.fifo` (which counts).
fn is_topic_name(name: &str) -> bool {
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    !stem.is_empty()
        && name.len() <= 256
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(region: &str) -> String {
        Region::parse(region).expect("region").signing_name()
    }

    #[test]
    fn every_row_of_the_reference_table() {
        for (region, cn) in [
            ("us-east-1", "sns.amazonaws.com"),
            ("ap-northeast-2", "sns.amazonaws.com"),
            ("eu-west-1", "sns.amazonaws.com"),
            ("eu-south-1", "sns-signing.eu-south-1.amazonaws.com"),
            ("me-central-1", "sns-signing.me-central-1.amazonaws.com"),
            ("af-south-1", "sns-signing.af-south-1.amazonaws.com"),
            ("mx-central-1", "sns-signing.mx-central-1.amazonaws.com"),
            ("us-gov-west-1", "sns-us-gov-west-1.amazonaws.com"),
            ("us-gov-east-1", "sns-us-gov-west-1.amazonaws.com"),
            ("cn-north-1", "sns-cn-north-1.amazonaws.com.cn"),
            ("cn-northwest-1", "sns-cn-northwest-1.amazonaws.com.cn"),
            ("us-iso-east-1", "sns-us-iso-east-1.c2s.ic.gov"),
            ("us-isob-east-1", "sns-us-isob-east-1.sc2s.sgov.gov"),
            (
                "us-isof-east-1",
                "sns-signing.us-isof-east-1.csp.hci.ic.gov",
            ),
            (
                "us-isof-south-1",
                "sns-signing.us-isof-south-1.csp.hci.ic.gov",
            ),
            (
                "eu-isoe-west-1",
                "sns-signing.eu-isoe-west-1.cloud.adc-e.uk",
            ),
            ("eusc-de-east-1", "sns-signing.eusc-de-east-1.amazonaws.eu"),
            // Regions not known yet: `sns.` and their partition's domain.
            ("xx-future-1", "sns.amazonaws.com"),
            ("cn-future-1", "sns.amazonaws.com.cn"),
            ("us-gov-future-1", "sns.amazonaws.com"),
            ("us-isob-west-2", "sns.sc2s.sgov.gov"),
            ("eusc-fr-west-1", "sns.amazonaws.eu"),
        ] {
            assert_eq!(name(region), cn, "{region}");
        }
    }

    #[test]
    fn region_names_have_the_shape_of_a_region() {
        for ok in [
            "us-east-1",
            "us-gov-west-1",
            "eusc-de-east-1",
            "ap-southeast-10",
        ] {
            assert!(Region::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "s3-external-1",
            "s3-us-west-2",
            "us-east",
            "east1",
            "1",
            "-1",
            "us--east-1",
            "US-EAST-1",
            "us_east-1",
            "us-east-1a",
            "",
        ] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_host_must_be_under_its_regions_partition_domain() {
        for ok in [
            "sns.us-east-1.amazonaws.com",
            "sns.us-gov-east-1.amazonaws.com",
            "sns.cn-north-1.amazonaws.com.cn",
            "sns.us-iso-east-1.c2s.ic.gov",
            "sns.us-isob-east-1.sc2s.sgov.gov",
            "sns.us-isof-south-1.csp.hci.ic.gov",
            "sns.eu-isoe-west-1.cloud.adc-e.uk",
            "sns.eusc-de-east-1.amazonaws.eu",
        ] {
            assert!(SnsHost::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "sns.cn-north-1.amazonaws.com",
            "sns.us-east-1.amazonaws.com.cn",
            "sns.us-east-1.amazonaws.eu",
            "sns.eusc-de-east-1.amazonaws.com",
            "sns.us-iso-east-1.amazonaws.com",
            "sns.us-isob-east-1.c2s.ic.gov",
            "sns.s3-external-1.amazonaws.com",
            "sns.s3-us-west-2.amazonaws.com",
            "sns.us-east-1.amazonaws.com.evil.com",
            "sns.a.b.amazonaws.com",
            "sqs.us-east-1.amazonaws.com",
            "sns.amazonaws.com",
        ] {
            assert!(SnsHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_arns_name_their_region_and_partition() {
        let topic = TopicArn::parse("arn:aws-us-gov:sns:us-gov-east-1:123456789012:feedback")
            .expect("GovCloud topic");
        assert_eq!(topic.region().as_str(), "us-gov-east-1");
        assert_eq!(topic.region().partition(), Partition::GovCloud);
        assert!(TopicArn::parse("arn:aws-cn:sns:cn-north-1:1:t").is_ok());
        assert!(TopicArn::parse("arn:aws:sns:us-east-1:123456789012:Ses_Feedback-2").is_ok());
        assert!(TopicArn::parse("arn:aws:sns:us-east-1:123456789012:feedback.fifo").is_ok());
        let longest = format!("arn:aws:sns:us-east-1:123456789012:{}", "t".repeat(256));
        assert!(TopicArn::parse(&longest).is_ok());
        let subscription = TopicArn::parse(
            "arn:aws:sns:us-east-1:123456789012:ses-feedback:5f0c2a9e-2d1f-4a39-9b57-0f1e2d3c4b5a",
        )
        .expect_err("a subscription ARN");
        assert!(
            subscription.contains("is a subscription ARN")
                && subscription.contains("`arn:aws:sns:us-east-1:123456789012:ses-feedback`"),
            "{subscription}"
        );
        // Named a subscription ARN only where its topic's would do.
        for bad in [
            "arn:aws:sns:us-east-1:123456789012:a b:5f0c2a9e",
            "arn:aws:sns:cn-north-1:123456789012:t:5f0c2a9e",
        ] {
            let why = TopicArn::parse(bad).expect_err(bad);
            assert!(!why.contains("subscription"), "{why}");
        }
        for bad in [
            "arn:aws:sns:us-east-1:123456789012:ses feedback",
            "arn:aws:sns:us-east-1:123456789012:.fifo",
            "arn:aws:sns:us-east-1:123456789012:topic.json",
            &format!("arn:aws:sns:us-east-1:123456789012:{}", "t".repeat(257)),
            "arn:aws:sns:cn-north-1:123456789012:t",
            "arn:aws-cn:sns:us-east-1:123456789012:t",
            "arn:aws:sqs:us-east-1:123456789012:t",
            "arn:aws:sns:us-east-1:123456789012:",
            "arn:aws:sns:us-east-1::t",
            "arn:aws:sns:s3-external-1:123456789012:t",
            "arn:other:sns:us-east-1:123456789012:t",
            "arn:aws:sns:us-east-1",
            "not-an-arn",
        ] {
            assert!(TopicArn::parse(bad).is_err(), "{bad}");
        }
    }
}
