"""Chinese person names and addresses.

Names: jieba segments the text (its HMM joins most unknown names into one word); a word is a name candidate when it
starts with a known surname, has a one- or two-character given name, and is not a dictionary word of another kind
nor on the domain stop list (银行卡, 脱敏, 满意度 ... which jieba's part-of-speech tagger mistakes for names).
Cue words (客户, 联系人, 先生, 女士 ...) raise the score and rescue names jieba split in two (冯 + 建国).
Addresses: an administrative-division chain (省/市/区/县/镇/街道) followed by a street, number and unit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence

import regex
from presidio_analyzer.nlp_engine import NlpArtifacts

from govsvc.pii.chinese import REGEX_TIMEOUT, ChineseRecognizer, Match, find_context

# Single-character surnames (about 400 of the most common, covering well over 99% of the population) and compound ones.
SINGLE_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆"
    "汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍"
    "庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华"
    "喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和"
    "仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼盘满闻位厉"
    "伊仝区郜海阚花权强帅屠豆朴盖练廉禹井祖漆巴丰支卿国狄平计索宣晋相初门云容敬来扈晁芮都普阙浦戈伏鹿薄邸雍辜羊阿乌母裘"
    "亓修邰赫杭况那宿鲜印逯隆茹诸战慕危玉银亢嵇公哈湛宾戎勾茅利於呼居揭干但尉冶斯元束檀衣信展阴昝智幸奉植衡富尧闭由"
)
COMPOUND_SURNAMES = frozenset(
    {"欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒", "夏侯", "轩辕"}
    | {"令狐", "端木", "独孤", "南宫", "西门", "百里", "呼延", "万俟", "申屠", "澹台", "钟离", "闻人", "赫连", "单于"}
)
# Words the tagger takes for names in CRM text, and everyday words that begin with a surname character.
STOP_WORDS = frozenset(
    {"银行卡", "脱敏", "满意度", "身份证", "信用卡", "储蓄卡", "手机号", "联系人", "联系方式", "客服", "客户", "工单"}
    | {"投诉", "退款", "贷款", "理财", "保险", "催收", "逾期", "账单", "积分", "会员", "服务", "经理", "专员", "主管"}
    | {"金额", "余额", "利息", "华为", "王者", "高铁", "高速", "方便", "安全", "安装", "周末", "周一", "周二", "周三"}
    | {"周四", "周五", "周六", "周日", "明天", "明日", "时间", "江湖", "文件", "文档", "程序", "常见", "常规", "石油"}
    | {"平安", "平台", "和平", "于是", "于此", "成功", "成本", "成员", "何时", "任何", "任务", "向导", "包括", "童装"}
    | {"关于", "关注", "关闭", "关系", "管理", "全部", "全额", "应该", "应用", "和解", "连续", "连接", "项目", "邮箱"}
    | {"宁愿", "尚未", "时候", "路上", "游戏", "蓝牙", "柏林", "杭州", "曲线", "谷歌", "花呗", "车辆", "车牌", "信息"}
    | {"万元", "高级", "钱包", "金卡", "黄金", "白金", "龙卡", "董事", "孔子", "康复", "温度", "严重", "申请", "申诉"}
    | {"来电", "来访", "来信", "回电", "致电", "申报", "明细", "明确", "安排", "康乐", "文明", "高兴", "常用", "应用"}
    | {"解决", "解冻", "解绑", "包裹", "支付", "支行", "邱园", "国内", "国外", "卫生", "方式", "方案", "吉利", "雷达"}
)
CUES_BEFORE = ("客户", "联系人", "姓名", "户名", "持卡人", "用户", "先生", "女士", "经理", "专员", "来访人", "收件人")
CUES_BEFORE += ("患者", "家属", "申请人", "投诉人", "致电", "回访", "开户人", "员工", "同事", "业务员", "name")
CUES_AFTER = ("先生", "女士", "小姐", "经理", "老师", "总", "来电", "反映", "表示", "称", "致电", "投诉", "本人")
_LABEL_BEFORE = regex.compile(r"(?:姓名|联系人|户名|持卡人|收件人|申请人|投诉人)[:：]?\s*$")
_HAN_RUN = regex.compile(r"\p{Han}+")
_jieba_lock = threading.Lock()
_tags: dict[str, str] | None = None


def _jieba():
    """jieba, initialised once per process (its dictionary loads in about a second)."""
    global _tags
    import jieba
    import jieba.posseg

    with _jieba_lock:
        if _tags is None:
            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            jieba.posseg.initialize()
            _tags = jieba.posseg.dt.word_tag_tab
    return jieba


def segment(text: str) -> list[tuple[str, int]]:
    """jieba words with their offsets (HMM on, for unknown names)."""
    jieba = _jieba()
    words = []
    position = 0
    for word in jieba.cut(text, HMM=True):
        words.append((word, position))
        position += len(word)
    return words


def _surname_length(word: str) -> int:
    if word[:2] in COMPOUND_SURNAMES:
        return 2
    if word[:1] in SINGLE_SURNAMES:
        return 1
    return 0


def _is_han(word: str) -> bool:
    return bool(word) and all("\u4e00" <= char <= "\u9fff" for char in word)


class ChineseNameRecognizer(ChineseRecognizer):
    """PERSON in Chinese (or mixed) text."""

    ENTITIES = ("PERSON",)

    def load(self) -> None:
        """jieba's dictionary and tags, once, when the recognizer is built (Presidio calls this)."""
        _jieba()

    def find(self, text: str) -> Iterable[Match]:
        for run in _HAN_RUN.finditer(text, timeout=REGEX_TIMEOUT):
            yield from self._names(text, run.start(), segment(run.group()))

    def find_with_artifacts(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterable[Match]:
        """In Chinese, the NLP tokens are jieba's words already: reuse them instead of segmenting again."""
        if self.supported_language == "zh" and nlp_artifacts is not None and nlp_artifacts.tokens is not None:
            return self._names(text, 0, [(token.text, token.idx) for token in nlp_artifacts.tokens])
        return self.find(text)

    def _names(self, text: str, offset: int, words: Sequence[tuple[str, int]]) -> Iterable[Match]:
        candidates = list(self._from_words(text, offset, words))
        candidates += self._after_cues(text) + self._before_titles(text)
        kept: list[Match] = []
        for match in sorted(candidates, key=lambda m: (-m.score, -(m.end - m.start))):
            if not any(match.start < other.end and other.start < match.end for other in kept):
                kept.append(match)
        return sorted(kept, key=lambda m: m.start)

    def _from_words(self, text: str, offset: int, words: Sequence[tuple[str, int]]) -> Iterable[Match]:
        """Words jieba made of a surname and a one- or two-character given name."""
        assert _tags is not None
        index = 0
        while index < len(words):
            word, position = words[index]
            start = offset + position
            candidate = None
            surname = _surname_length(word) if _is_han(word) else 0
            if surname and 1 <= len(word) - surname <= 2 and _plausible(word, surname):
                tag = _tags.get(word)
                if _common_word(word[surname:]) and not self._cue(text, start, start + len(word)):
                    pass  # 于本周 is in the dictionary as a name; without a cue it is "in this week"
                elif tag is None or tag.startswith("nr"):
                    candidate = (start, start + len(word), 0.55 if tag is None else 0.6)
                elif _LABEL_BEFORE.search(text[max(0, start - 6) : start]):
                    candidate = (start, start + len(word), 0.5)  # a dictionary word right after 姓名： is a name
            elif surname and len(word) == surname and index + 1 < len(words):
                given, _ = words[index + 1]
                if _is_han(given) and 1 <= len(given) <= 2 and _plausible(word + given, surname):
                    end = start + len(word) + len(given)
                    if _tags.get(given, "").startswith("nr"):
                        candidate = (start, end, 0.5)
                        index += 1
            if candidate:
                begin, end, score = candidate
                cue = self._cue(text, begin, end)
                yield Match("PERSON", begin, end, score + 0.3 if cue else score, cue)
            index += 1

    def _after_cues(self, text: str) -> list[Match]:
        """客户王玉申请...: a surname right after a cue, and a given name up to the next dictionary word."""
        found = []
        for cue in _CUE_BEFORE_RE.finditer(text, timeout=REGEX_TIMEOUT):
            start = cue.end()
            surname = _surname_length(text[start : start + 2])
            if not surname:
                continue
            end = start + surname
            while end - start - surname < 2 and end < len(text) and _given_char(text[end]):
                if end - start - surname >= 1 and _word_starts(text, end):
                    break
                end += 1
            if end - start > surname and _plausible(text[start:end], surname):
                found.append(Match("PERSON", start, end, 0.85, cue.group(1)))
        return found

    def _before_titles(self, text: str) -> list[Match]:
        """黄金兰女士, 王建国先生, 邓杰、...: the name just before a title or an enumeration comma."""
        found = []
        for title in _TITLE_RE.finditer(text, timeout=REGEX_TIMEOUT):
            end = title.start()
            for length in (4, 3, 2):
                start = end - length
                if start < 0 or not all(_given_char(char) for char in text[start:end]):
                    continue
                surname = _surname_length(text[start:end])
                if not surname or length - surname > 2 or length == surname:
                    continue
                if length == 2 and text[end - 1] in _TOP_SURNAMES:
                    continue  # 向李先生: a surname and a title, not a full name
                if _plausible(text[start:end], surname):
                    found.append(Match("PERSON", start, end, 0.8, title.group()))
                    break
        return found

    @staticmethod
    def _cue(text: str, start: int, end: int) -> str | None:
        before = find_context(text, start, end, CUES_BEFORE, before=4, after=0)
        return before or find_context(text, start, end, CUES_AFTER, before=0, after=3)


_FUNCTION_CHARS = frozenset("的了在是和与及等已于把被向对从给为也都就还又并而或着过请您你我他她它们这那个位")
_TITLES = ("先生", "女士", "小姐", "老师", "同学", "阿姨", "师傅")
_TOP_SURNAMES = frozenset("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹")
_CUE_BEFORE_RE = regex.compile(
    r"(客户经理|客户|对接人|联系人|收件人|寄件人|持卡人|开户人|户名|姓名|回访|致电|专员|申请人|投诉人|患者|家属|用户|、)[:：]?\s?"
)
_TITLE_RE = regex.compile(r"先生|女士|小姐|老师|、")


def _given_char(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff" and char not in _FUNCTION_CHARS


def _word_starts(text: str, position: int) -> bool:
    """Whether a common dictionary word (not a name) starts at ``position``: the given name ends before it."""
    assert _tags is not None
    for length in (2, 3):
        word = text[position : position + length]
        if len(word) == length and word in _tags and not _tags[word].startswith("nr"):
            return True
    return False


def _common_word(word: str) -> bool:
    """A frequent dictionary word that is not a name (本周, 金额): unlikely to be a given name without a cue."""
    assert _tags is not None
    tag = _tags.get(word)
    return len(word) > 1 and tag is not None and not tag.startswith("nr") and _frequency(word) >= 100


def _frequency(word: str) -> int:
    import jieba

    return jieba.dt.FREQ.get(word) or 0


def _plausible(name: str, surname: int) -> bool:
    """Not a stop-list word, no title or function character in the given name."""
    given = name[surname:]
    assert _tags is not None
    tag = _tags.get(name)
    if tag and not tag.startswith("nr") and _frequency(name) >= 500:
        return False  # a common word that starts with a surname character (银行, 黄金, 方便)
    if name in STOP_WORDS or given in STOP_WORDS or any(char in _FUNCTION_CHARS for char in given):
        return False
    return not any(title in name for title in _TITLES)


_PROVINCE = r"(?:[\p{Han}]{2,3}(?:省|自治区)|北京市?|上海市?|天津市?|重庆市?|香港|澳门)"
_CITY = r"(?:[\p{Han}]{2,4}?(?:市|自治州|地区|盟))"
_DISTRICT = r"(?:[\p{Han}]{1,4}?(?:区|县|旗))"
_TOWN = r"(?:[\p{Han}]{2,5}?(?:镇|乡|街道))"
_STREET = r"(?:[\p{Han}0-9]{1,8}?(?:路|街|大道|大街|巷|弄|胡同|道))"
_NUMBER = r"(?:[0-9]{1,5}(?:号|弄)(?:院)?)"
_BUILDING = r"(?:[\p{Han}]{0,8}?(?:小区|花园|大厦|公寓|广场|新村|苑|庭|城))?"
_UNIT = r"(?:[0-9]{1,3}(?:号楼|栋|幢|座)(?:[0-9]{1,2}单元)?(?:[0-9]{1,5}(?:室|号|房))?|[0-9]{1,5}室)?"


class ChineseAddressRecognizer(ChineseRecognizer):
    """CN_ADDRESS: a division chain down to a street and house number (or a full division chain alone)."""

    ENTITIES = ("CN_ADDRESS",)
    CONTEXT = ("地址", "住址", "住在", "寄到", "收货", "位于", "address")
    _FULL = regex.compile(
        f"(?:{_PROVINCE}{_CITY}?|{_CITY}){_DISTRICT}?{_TOWN}?{_STREET}{_NUMBER}{_BUILDING}{_UNIT}"
        f"|(?:{_PROVINCE}{_CITY}?|{_CITY}){_DISTRICT}{_TOWN}?{_STREET}?"
    )

    def find(self, text: str) -> Iterable[Match]:
        for found in self._FULL.finditer(text, timeout=REGEX_TIMEOUT):
            start, end = found.span()
            # a context word that the lazy Han prefix swallowed ("地址北京市...") is not part of the address
            for word in (*self.CONTEXT, "客户", "现住", "位于", "寄往", "在"):
                if text.startswith(word, start) and end - start > len(word) + 4:
                    start += len(word)
                    break
            has_number = bool(regex.search(r"[0-9]", text[start:end]))
            yield self._scored("CN_ADDRESS", text, start, end, 0.7 if has_number else 0.5)
