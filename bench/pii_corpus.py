"""A labelled, reproducible corpus of CRM-like text for the PII evaluation and benchmark.

``build_corpus(seed)`` returns English, Chinese and mixed-language sentences with gold spans. Same seed, same corpus.
English names come from Faker's en_US tables; Chinese names are drawn from surname frequencies (the ~60 most common
surnames by their share of the population, plus a tail of rarer and compound surnames, some of which the recognizer
does not list) and common given-name characters, one or two of them. Sentences mix in the domain words that trip
jieba's name tagging (银行卡, 脱敏, 满意度 ...), and negatives: order numbers, IDs with a wrong check character,
Luhn-failing numbers without context.

Labelling rules: card numbers are CN_BANK_CARD when their BIN is UnionPay/domestic (62, 60, 9), else CREDIT_CARD; a
mainland mobile is CN_MOBILE in any language; a full Chinese address (down to the house number) is CN_ADDRESS.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from faker import Faker

from govsvc.pii.checksums import USCC_ALPHABET, luhn_valid, resident_id_check_char, uscc_check_char


@dataclass
class Sample:
    text: str
    language: str  # the corpus's label: en, zh or mixed
    spans: list[tuple[int, int, str]] = field(default_factory=list)


# Share of the population (per cent, rounded) of the most common surnames, then a tail drawn uniformly.
SURNAME_WEIGHTS = {
    "王": 7.1, "李": 7.0, "张": 6.7, "刘": 5.4, "陈": 4.5, "杨": 3.1, "黄": 2.2, "赵": 2.0, "吴": 2.0, "周": 1.9,
    "徐": 1.3, "孙": 1.3, "马": 1.1, "朱": 1.1, "胡": 1.0, "郭": 1.0, "何": 1.0, "高": 0.9, "林": 0.9, "罗": 0.9,
    "郑": 0.8, "梁": 0.8, "谢": 0.7, "宋": 0.7, "唐": 0.7, "许": 0.6, "韩": 0.6, "冯": 0.6, "邓": 0.6, "曹": 0.6,
    "彭": 0.5, "曾": 0.5, "肖": 0.5, "田": 0.5, "董": 0.5, "袁": 0.5, "潘": 0.4, "于": 0.4, "蒋": 0.4, "蔡": 0.4,
    "余": 0.4, "杜": 0.4, "叶": 0.4, "程": 0.4, "苏": 0.4, "魏": 0.3, "吕": 0.3, "丁": 0.3, "任": 0.3, "沈": 0.3,
    "姚": 0.3, "卢": 0.3, "姜": 0.3, "崔": 0.3, "钟": 0.3, "谭": 0.3, "陆": 0.3, "汪": 0.3, "范": 0.3, "金": 0.3,
}  # fmt: skip
SURNAME_TAIL = [
    "欧阳",
    "司马",
    "上官",
    "诸葛",
    "东方",
    "仉",
    "琚",
    "郗",
    "阮",
    "柯",
    "蓝",
    "靳",
    "卓",
    "简",
    "冼",
    "甘",
]
GIVEN_CHARS = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国文辉力鹏宇浩然子涵梓轩欣怡思雨佳琪晨阳博文俊杰"
    "雪梅海燕红霞玉兰志强永明金凤春花晓东立新少华德胜嘉怡雅婷诗琪一鸣天佑家豪梦瑶淑珍丹丹慧敏婉清若曦宏图振华"
)
CN_DIVISIONS = [  # province, city (none for municipalities), district, its GB/T 2260 code
    ("北京市", "", "朝阳区", "110105"),
    ("北京市", "", "海淀区", "110108"),
    ("上海市", "", "浦东新区", "310115"),
    ("上海市", "", "徐汇区", "310104"),
    ("广东省", "广州市", "天河区", "440106"),
    ("广东省", "深圳市", "南山区", "440305"),
    ("浙江省", "杭州市", "西湖区", "330106"),
    ("四川省", "成都市", "武侯区", "510107"),
    ("湖北省", "武汉市", "武昌区", "420106"),
    ("江苏省", "南京市", "玄武区", "320102"),
    ("陕西省", "西安市", "雁塔区", "610113"),
    ("福建省", "福州市", "鼓楼区", "350102"),
    ("湖南省", "长沙市", "天心区", "430103"),
    ("河南省", "郑州市", "金水区", "410105"),
    ("山东省", "济南市", "历下区", "370102"),
    ("重庆市", "", "渝中区", "500103"),
    ("天津市", "", "和平区", "120101"),
    ("云南省", "昆明市", "五华区", "530102"),
]
STREETS = [
    "建国路",
    "人民路",
    "中山路",
    "解放路",
    "科技园南路",
    "文三路",
    "世纪大道",
    "长江路",
    "和平街",
    "新华路",
    "东风路",
]
BUILDINGS = ["", "", "阳光花园", "金色家园小区", "翠湖苑", "国贸大厦"]
MOBILE_PREFIXES = ["130", "135", "138", "139", "150", "152", "158", "166", "177", "186", "188", "199"]
EMAIL_DOMAINS = ["qq.com", "163.com", "126.com", "sina.com", "foxmail.com", "example.cn", "corp.example.com"]
PINYIN = ["zhang", "wang", "li", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu", "sun", "ma", "zhu"]
US_CITIES = ["Seattle", "Boston", "Chicago", "Denver", "Austin", "Phoenix", "Atlanta", "Portland", "Dallas", "Miami"]
US_AREA = ["206", "617", "312", "303", "512", "602", "404", "503", "214", "305", "212", "415"]


class Generator:
    """Values with their labels, from one seeded random source."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fake = Faker("en_US")
        self.fake.seed_instance(seed)
        self.ibans = [Faker(locale) for locale in ("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES")]
        for index, fake in enumerate(self.ibans):
            fake.seed_instance(seed + index)
        self._surnames = list(SURNAME_WEIGHTS)
        self._weights = list(SURNAME_WEIGHTS.values())

    def cn_name(self) -> str:
        rng = self.rng
        surname = rng.choice(SURNAME_TAIL) if rng.random() < 0.06 else rng.choices(self._surnames, self._weights)[0]
        given = "".join(rng.choice(GIVEN_CHARS) for _ in range(1 if rng.random() < 0.3 else 2))
        return surname + given

    def resident_id(self, valid: bool = True) -> str:
        rng = self.rng
        region = rng.choice(CN_DIVISIONS)[3]
        first17 = f"{region}{rng.randint(1950, 2006)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        first17 += f"{rng.randint(0, 999):03d}"
        check = resident_id_check_char(first17)
        if not valid:
            check = rng.choice([c for c in "0123456789X" if c != check])
        return first17 + check

    def mobile(self) -> str:
        number = self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randint(0, 99_999_999):08d}"
        style = self.rng.random()
        if style < 0.15:
            return "+86 " + number
        if style < 0.25:
            return f"{number[:3]}-{number[3:7]}-{number[7:]}"
        if style < 0.32:
            return f"{number[:3]} {number[3:7]} {number[7:]}"
        return number

    def card(self, prefix: str, length: int, *, spaced: bool | None = None) -> str:
        body = prefix + "".join(str(self.rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
        number = next(body + d for d in "0123456789" if luhn_valid(body + d))
        if spaced is None:
            spaced = self.rng.random() < 0.25
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4)) if spaced else number

    def unionpay(self) -> str:
        return self.card(self.rng.choice(["622202", "621226", "622848", "623058", "625965"]), self.rng.choice([16, 19]))

    def credit_card(self) -> str:
        kind = self.rng.choice(["visa16", "visa16", "mastercard", "amex", "discover", "jcb16", "visa19", "diners"])
        number = self.fake.credit_card_number(kind)
        if self.rng.random() < 0.2 and len(number) == 16:
            return " ".join(number[i : i + 4] for i in range(0, 16, 4))
        return number

    def uscc(self) -> str:
        region = self.rng.choice(CN_DIVISIONS)[3]
        org = "".join(self.rng.choice(USCC_ALPHABET) for _ in range(9))
        first17 = "91" + region + org
        return first17 + uscc_check_char(first17)

    def email_cn(self) -> str:
        local = self.rng.choice(PINYIN) + self.rng.choice(["", ".", "_"]) + self.rng.choice(PINYIN)
        if self.rng.random() < 0.5:
            local += str(self.rng.randint(1, 9999))
        if self.rng.random() < 0.15:
            return f"{self.rng.randint(10000, 99999999)}@qq.com"
        return f"{local}@{self.rng.choice(EMAIL_DOMAINS)}"

    def address_cn(self) -> str:
        province, city, district, _ = self.rng.choice(CN_DIVISIONS)
        street = self.rng.choice(STREETS) + f"{self.rng.randint(1, 999)}号"
        building = self.rng.choice(BUILDINGS)
        unit = self.rng.choice(
            ["", f"{self.rng.randint(1, 30)}栋{self.rng.randint(1, 6)}单元{self.rng.randint(101, 2806)}室"]
        )
        prefix = province + city if city else province
        return prefix + district + street + building + unit

    def us_phone(self) -> str:
        area, exchange, line = self.rng.choice(US_AREA), self.rng.randint(201, 989), self.rng.randint(0, 9999)
        return self.rng.choice(
            [f"{area}-{exchange}-{line:04d}", f"({area}) {exchange}-{line:04d}", f"+1 {area} {exchange} {line:04d}"]
        )

    def iban(self) -> str:
        return self.rng.choice(self.ibans).iban()


def _fill(template: str, values: dict[str, tuple[str, str | None]], language: str) -> Sample:
    """Format ``{slot}`` placeholders, recording each labelled value's span."""
    text = ""
    spans = []
    rest = template
    while "{" in rest:
        before, _, tail = rest.partition("{")
        slot, _, rest = tail.partition("}")
        text += before
        value, label = values[slot]
        if label:
            spans.append((len(text), len(text) + len(value), label))
        text += value
    return Sample(text + rest, language, spans)


ZH_TEMPLATES = [
    "客户{name}来电反映银行卡被冻结，要求尽快处理，联系电话{mobile}。",
    "{name}女士投诉理财产品收益不符，已登记工单，满意度较低。",
    "联系人：{name}，手机：{mobile}，邮箱：{email}。",
    "根据脱敏要求，客户{name}的身份证号{id}仅对专员可见。",
    "今日回访{name}先生，满意度调查结果为满意。",
    "客户{name}申请更换储蓄卡，卡号{unionpay}，开户行为招商银行。",
    "{name}反映收到的账单地址有误，新地址为{address}。",
    "已为{name}办理退款，退回至信用卡{cc}。",
    "持卡人{name}，身份证{id}，手机{mobile}，要求解绑银行卡。",
    "企业客户统一社会信用代码{uscc}，对接人{name}，邮箱{email}。",
    "请将合同寄到{address}，收件人{name}，电话{mobile}。",
    "客户经理{name}跟进中，客户希望通过邮件{email}沟通。",
    "工单备注：客户要求对手机号和银行卡号进行脱敏处理，满意度回访已完成。",
    "本月投诉量下降，客户满意度提升，催收逾期账单三笔。",
    "订单号{order}已发货，预计三天内送达。",
    "客户提供的身份证号{bad_id}校验失败，请核实。",
    "{name}、{name2}两位客户参加了会员日活动。",
    "客户{name}的银行卡{unionpay}绑定成功，积分已到账。",
]
EN_TEMPLATES = [
    "Customer {person} called about a billing error; call back on {phone}.",
    "Please update the e-mail of {person} to {email_en} and confirm by phone {phone}.",
    "{person} from {city} asked to close the account, card {cc} to be cancelled.",
    "Refund sent to IBAN {iban} for {person}.",
    "Ticket escalated: {person} reports a duplicate charge on card {cc}.",
    "Spoke with {person} in {city}; satisfied with the resolution.",
    "The customer moved to {city} and asked for paper statements.",
    "Order {order} shipped on Monday; no action needed.",
    "Account owner {person}, contact {email_en}, prefers calls after 5pm.",
    "Wire transfer to {iban} was rejected, {person} will resend.",
    "Customer {cn_name} (mobile {mobile}) asked for an English invoice.",
    "Meeting with {person} and {cn_name} about the renewal, ID {id} verified.",
    "客户 {person} 来电，手机{mobile}，邮箱{email_en}，要求英文账单。",
    "Card {unionpay} of customer {cn_name} was blocked after three failed PIN attempts.",
]


def build_corpus(seed: int = 20261123, per_language: int = 600) -> list[Sample]:
    """``per_language`` Chinese and English samples (the English set includes mixed-language lines)."""
    gen = Generator(seed)
    samples: list[Sample] = []
    for language, templates in (("zh", ZH_TEMPLATES), ("en", EN_TEMPLATES)):
        for index in range(per_language):
            template = templates[index % len(templates)]
            values: dict[str, tuple[str, str | None]] = {
                "name": (gen.cn_name(), "PERSON"),
                "name2": (gen.cn_name(), "PERSON"),
                "cn_name": (gen.cn_name(), "PERSON"),
                "mobile": (gen.mobile(), "CN_MOBILE"),
                "email": (gen.email_cn(), "EMAIL_ADDRESS"),
                "email_en": (gen.fake.email(), "EMAIL_ADDRESS"),
                "id": (gen.resident_id(), "CN_RESIDENT_ID"),
                "bad_id": (gen.resident_id(valid=False), None),
                "unionpay": (gen.unionpay(), "CN_BANK_CARD"),
                "cc": (gen.credit_card(), "CREDIT_CARD"),
                "uscc": (gen.uscc(), "CN_USCC"),
                "address": (gen.address_cn(), "CN_ADDRESS"),
                "order": (str(gen.rng.randint(10**15, 10**16 - 1)), None),
                "person": (gen.fake.name(), "PERSON"),
                "city": (gen.rng.choice(US_CITIES), "LOCATION"),
                "phone": (gen.us_phone(), "PHONE_NUMBER"),
                "iban": (gen.iban(), "IBAN_CODE"),
            }
            mixed = (
                any(slot in template for slot in ("{cn_name}", "{mobile}", "{unionpay}", "{id}")) and language == "en"
            )
            samples.append(_fill(template, values, "mixed" if mixed else language))
    return samples
