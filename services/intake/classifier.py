"""Category classification of Chinese appeal text into the taxonomy's leaf codes.

Method (see docs/classification.md): jieba words, TF-IDF vectors, one centroid per leaf
learnt at first use from the *train* rows of ``data/appeals_labelled.csv``; each leaf's score is
its cosine similarity to the appeal plus a small boost for each hand-written cue word of that leaf
(or of its top level) found in the title or the content. The best leaf wins and gives the top
level. Confidence is a softmax over the scores; below ``min_confidence`` the answer is ``1901``
(other appeals) with the model's guess kept as the first alternative.

Deterministic (no randomness; ties broken by code), pure Python, well under a millisecond per
appeal once warm; jieba's dictionary is loaded on first use, quietly, into a private tokenizer.

``python -m services.intake.classifier --evaluate`` reports held-out accuracy; ``--cv`` runs
5-fold cross-validation on the train rows only (tune with it, never with the held-out rows);
``--write-docs`` refreshes the results block of docs/classification.md.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import re
import sys
import threading
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from shared import taxonomy

OTHER = "1901"

# Cue words per leaf (and two per top level): what a 12345 operator recognizes at a glance.
# Each occurrence in the title or the content adds ``cue_weight`` to its leaf's score and
# ``top_cue_weight`` to every leaf of its top level. Domain knowledge, kept short and generic.
CUES: dict[str, tuple[str, ...]] = {
    "0101": (
        "人行道",
        "窨井盖",
        "井盖",
        "路面",
        "坑洼",
        "地砖",
        "天桥",
        "盲道",
        "护栏",
        "路沿石",
        "沉降",
    ),
    "0102": ("路灯", "照明", "灯不亮", "景观灯", "灯杆"),
    "0103": ("停水", "自来水", "水压", "供水", "水表", "水龙头", "二次供水", "水质"),
    "0104": (
        "积水",
        "内涝",
        "排水",
        "下水道",
        "雨水井",
        "倒灌",
        "污水井",
        "化粪池",
        "雨水篦子",
        "排涝",
    ),
    "0105": ("燃气", "天然气", "煤气", "液化气", "燃气表"),
    "0106": ("暖气", "供暖", "取暖费", "热力公司", "采暖", "供热"),
    "0107": ("物业", "物业费", "业委会", "业主大会", "物业公司"),
    "0108": ("施工", "工地", "渣土车", "打桩", "夜间施工", "扬尘", "围挡"),
    "0109": ("拆迁", "征收", "过渡费", "安置房", "强拆", "征地"),
    "0201": ("废气", "焚烧", "粉尘", "黑烟", "刺鼻", "喷漆", "烟囱"),
    "0202": ("河水", "排污", "直排", "废水", "偷排", "死鱼", "水源", "油污"),
    "0203": ("噪音", "噪声", "广场舞", "音响", "隔音", "鸣笛"),
    "0204": ("垃圾", "垃圾桶", "环卫", "公共厕所", "粪便", "清运", "垃圾分类"),
    "0205": ("油烟", "异味", "臭味", "排烟", "恶臭", "气味"),
    "0301": ("公交", "地铁", "班次", "公交车", "站台", "发车", "线路"),
    "0302": ("出租车", "网约车", "拒载", "打表", "黑车", "计价器", "绕路"),
    "0303": ("红绿灯", "信号灯", "交通标志", "标线", "绿灯", "配时", "限速", "左转"),
    "0304": ("停车", "违停", "车位", "停车场", "共享单车", "乱停", "罚单"),
    "0305": ("货车", "超载", "客车", "驾校", "客运", "班车", "汽车站", "教练"),
    "0401": ("食品", "过期", "变质", "异物", "食堂", "注水肉", "拉肚子", "吃出", "三无"),
    "0402": ("退款", "预付卡", "办卡", "跑路", "退货", "售后", "假货", "消费者"),
    "0403": ("价格", "收费标准", "明码标价", "乱收费", "涨价", "价签", "加价"),
    "0404": ("质量", "漏电", "鼓包", "不合格", "三包", "爆裂", "开胶"),
    "0405": ("无证", "没有执照", "没有证照", "无照", "没有营业执照", "没有任何资质"),
    "0501": ("工资", "欠薪", "拖欠工资", "工钱", "讨薪", "克扣"),
    "0502": ("社保", "社会保险", "失业金", "缴费基数", "工伤保险", "断缴", "失业保险"),
    "0503": ("养老金", "退休金", "退休", "资格认证", "养老保险"),
    "0504": ("就业", "创业", "招聘", "求职", "培训补贴", "就业补贴", "零工", "公益性岗位"),
    "0505": ("劳动合同", "辞退", "试用期", "调岗", "解除劳动", "竞业", "离职证明", "劳务派遣"),
    "0601": ("入学", "学区", "学位", "招生", "转学", "学籍", "幼儿园"),
    "0602": ("教辅", "学费", "校服", "赞助费", "伙食费", "补课费", "课后服务"),
    "0603": ("培训机构", "补课", "培训班", "托管班", "课时费", "补习"),
    "0604": ("校园", "欺凌", "校车", "上下学", "护校"),
    "0701": ("挂号", "医院", "医生", "看病", "门诊", "家庭医生", "卫生院", "就诊"),
    "0702": ("手术", "误诊", "医疗事故", "医美", "并发症", "病历", "鉴定"),
    "0703": ("医保", "报销", "慢特病", "异地就医", "医保卡", "医保目录"),
    "0704": ("疫苗", "疾控", "蚊子", "流感", "老鼠", "消杀", "传染", "水痘", "狂犬"),
    "0801": ("公积金",),
    "0802": ("房产证", "不动产", "产权证", "过户", "抵押", "登记中心"),
    "0803": ("租房", "房东", "押金", "租金", "二房东", "群租", "租赁", "退租"),
    "0804": ("公租房", "廉租房", "保障房", "人才公寓", "轮候", "棚改", "经济适用房"),
    "0805": ("开发商", "交房", "楼盘", "售楼", "烂尾", "商品房", "精装修"),
    "0901": ("灌溉", "水渠", "沟渠", "机埠", "山塘", "机耕路", "排灌", "闸门"),
    "0902": ("种粮", "农机", "地力保护", "农业保险", "惠农", "收购价"),
    "0903": ("承包地", "土地流转", "承包经营权", "流转", "确权", "承包合同"),
    "0904": ("养殖", "养猪场", "养鸡场", "兽药", "病死猪", "禁养区", "鱼塘", "防疫"),
    "0905": ("改厕", "农村", "村道", "村庄", "美丽乡村", "粪坑"),
    "1001": ("身份证", "户口", "落户", "居住证", "户籍", "护照", "户口本"),
    "1002": ("盗窃", "赌博", "治安", "打架", "斗殴", "被盗", "吸毒", "卖淫", "乞讨", "闹事"),
    "1003": ("诈骗", "被骗", "刷单", "转账", "骗局", "冒充"),
    "1004": ("消防", "火灾", "灭火器", "安全出口", "飞线", "消防栓", "易燃"),
    "1005": ("安全生产", "防护", "安全带", "危化品", "中毒", "采石场", "塔吊", "锅炉", "爆炸"),
    "1101": ("低保",),
    "1102": ("养老院", "养老机构", "老年食堂", "护理员", "助浴", "日间照料", "高龄津贴", "失能"),
    "1103": ("残疾", "残联", "无障碍", "轮椅", "聋哑", "手语", "盲人"),
    "1104": ("救助", "流浪", "重病", "临时救助", "受灾", "困境"),
    "1105": ("公墓", "殡仪馆", "婚姻登记", "墓", "丧葬", "结婚证", "殡葬"),
    "1201": ("违建", "违章", "私搭", "加盖", "违法建设", "阳光房", "搭建"),
    "1202": ("耕地", "闲置", "林地", "采砂", "集体土地", "占地", "用地"),
    "1203": ("规划", "日照", "采光", "规划许可", "间距", "选址"),
    "1301": ("邻居", "楼上", "对门", "隔壁", "邻里"),
    "1302": ("赡养", "离婚", "抚养费", "婆婆", "遗产", "遗嘱", "前夫", "前妻"),
    "1303": ("借条", "借钱", "欠款", "定金", "合伙", "装修款", "加盟费"),
    "1304": ("宅基地", "界址", "山林", "地界", "田界", "自留地"),
    "1305": ("工伤", "劳动争议", "经济补偿", "加班费", "包工头"),
    "1306": ("交通事故", "撞", "剐蹭", "追尾", "车祸", "定损", "肇事"),
    "1401": ("审批", "许可证", "验收", "资质", "环评", "营业执照", "备案"),
    "1402": ("扶持", "奖励", "政策兑现", "招商", "优惠", "稳岗", "退税"),
    "1403": ("工程款", "贷款", "融资", "账款", "货款", "担保", "尾款", "账期"),
    "1404": ("用电", "停电", "用水", "用气", "增容", "电价", "蒸汽"),
    "1501": ("跑了", "推诿", "窗口", "一次性告知", "超时", "来回跑", "办不成"),
    "1502": ("态度", "工作人员", "离岗", "玩手机", "好处费", "粗暴", "吃拿卡要"),
    "1503": ("信息公开", "公开", "公示", "账目", "透明"),
    "1601": ("旅行社", "导游", "景区", "民宿", "旅游", "购物点", "农家乐", "跟团"),
    "1602": ("健身器材", "图书馆", "体育馆", "篮球场", "文化礼堂", "游泳馆", "博物馆", "活动室"),
    "1701": ("咨询", "请问", "想了解", "想问", "能不能", "是否可以"),
    "1702": ("怎么办", "如何办理", "需要什么材料", "去哪里", "哪些材料", "需要带", "怎么"),
    "1801": ("建议", "增设"),
    "1802": ("表扬", "感谢", "谢谢", "感激", "值得表扬"),
    "1901": ("不属于", "聊天", "彩票", "外星人", "打错"),
    # Top-level cues: words that say which family an appeal belongs to, not which leaf.
    "13": ("纠纷", "调解", "协商不成", "谈不拢", "矛盾"),
    "14": ("企业", "我公司", "我司"),
}

_STOPWORD_TEXT = (
    "的 了 是 在 我 我们 你 他 她 它 他们 和 与 及 或 也 都 就 还 又 很 太 有 没有 没 不 这 那 "
    "一个 一 个 些 什么 怎么 因为 所以 但是 但 而且 并 被 把 让 给 对 从 到 向 为 以 等 "
    "着 过 吗 呢 吧 啊 呀 请 希望 要求 反映 来电 来电人 市民 称 表示 目前 现在 已经 一直 "
    "自己 大家 这个 那个 这样 可以 能 会 要 说 去 来 上 下 里 中 后 前 时 年 月 日 号"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_CLAUSE = re.compile(r"[，,。！？!?；;\n]")
_INTENT = frozenset({"17", "18"})
_TOKEN_OK = re.compile(r"[\u4e00-\u9fffA-Za-z]")


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    """The model's knobs; the defaults were chosen by cross-validation on the train rows."""

    use_bigrams: bool = False
    cue_weight: float = 0.15
    top_cue_weight: float = 0.08
    temperature: float = 0.03
    min_confidence: float = 0.2


@dataclass(frozen=True, slots=True)
class Alternative:
    """A candidate leaf and its probability."""

    code: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Classification:
    """The chosen leaf (or ``1901``), its top level, how sure, and the runners-up."""

    code: str
    top_level: str
    confidence: float
    top_level_confidence: float
    alternatives: tuple[Alternative, ...] = ()
    low_confidence: bool = False


@dataclass(frozen=True, slots=True)
class LabelledAppeal:
    """One row of the labelled set."""

    id: str
    category_code: str
    split: str
    title: str
    content: str

    @property
    def top_level(self) -> str:
        """The row's top-level code."""
        return self.category_code[:2]


# --- tokenization ----------------------------------------------------------------------------

_TOKENIZER_LOCK = threading.Lock()
_tokenizer: Any = None


def _jieba() -> Any:
    """A private jieba tokenizer knowing the cue words and stopwords, loaded once, quietly."""
    global _tokenizer
    if _tokenizer is None:
        with _TOKENIZER_LOCK:
            if _tokenizer is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                for words in (*CUES.values(), _STOPWORDS):
                    for word in words:
                        if len(word) > 1:
                            tokenizer.add_word(word, freq=2000)
                _tokenizer = tokenizer
    return _tokenizer


def normalize(text: str) -> str:
    """NFKC (full-width → half-width), lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def tokens(text: str) -> list[str]:
    """jieba words of the text without stopwords, punctuation and numbers."""
    return [
        word
        for word in _jieba().lcut(normalize(text), HMM=False)
        if word not in _STOPWORDS and _TOKEN_OK.search(word)
    ]


def features(title: str, content: str, config: ClassifierConfig) -> frozenset[str]:
    """The set of features of one appeal: its words, and optionally character bigrams."""
    bag: set[str] = set()
    for part in (title, content):
        if not part:
            continue
        bag.update("w:" + word for word in tokens(part))
        if config.use_bigrams:
            for run in _CJK_RUN.findall(normalize(part)):
                bag.update("b:" + run[i : i + 2] for i in range(len(run) - 1))
    return frozenset(bag)


@cache
def _cue_index() -> tuple[dict[str, tuple[str, ...]], tuple[int, ...]]:
    """Cue word → the codes it is a cue for, and the distinct cue lengths (longest first)."""
    index: dict[str, list[str]] = defaultdict(list)
    for code, words in CUES.items():
        for word in words:
            index[normalize(word)].append(code)
    lengths = tuple(sorted({len(word) for word in index}, reverse=True))
    return {word: tuple(codes) for word, codes in index.items()}, lengths


def _cue_words(text: str) -> set[str]:
    """The distinct cue words occurring in already normalized text."""
    index, lengths = _cue_index()
    found: set[str] = set()
    for size in lengths:
        for start in range(len(text) - size + 1):
            piece = text[start : start + size]
            if piece in index:
                found.add(piece)
    return found


def cue_hits(title: str, content: str = "") -> dict[str, int]:
    """How many cue words of each leaf (or top level) occur in the title plus in the content.

    What the citizen *wants* (to ask, to suggest, to thank) is said up front; the intent cues of
    categories 17 and 18 count only in the title and the content's opening clause, so that a
    complaint ending "建议尽快整改" is not taken for a suggestion.
    """
    index, _ = _cue_index()
    hits: dict[str, int] = defaultdict(int)
    for word in _cue_words(normalize(title)):
        for code in index[word]:
            hits[code] += 1
    if content:
        normalized = normalize(content)
        opening = _CLAUSE.split(normalized, maxsplit=1)[0]
        in_opening = _cue_words(opening)
        for word in _cue_words(normalized):
            for code in index[word]:
                if code[:2] not in _INTENT or word in in_opening:
                    hits[code] += 1
    return dict(hits)


# --- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CentroidModel:  # not slots: cached_property needs an instance __dict__
    """TF-IDF nearest-centroid scores per leaf, plus cue-word boosts."""

    config: ClassifierConfig
    labels: tuple[str, ...]
    idf: dict[str, float]
    default_idf: float
    # feature -> ((leaf index, centroid weight), ...): an inverted index for sparse dot products
    postings: dict[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)

    @classmethod
    def train(cls, rows: Sequence[LabelledAppeal], config: ClassifierConfig) -> CentroidModel:
        """Fit the centroids on labelled rows."""
        docs = [(row.category_code, features(row.title, row.content, config)) for row in rows]
        frequency: Counter[str] = Counter()
        for _, bag in docs:
            frequency.update(bag)
        total = len(docs)
        idf = {f: math.log((total + 1) / (n + 1)) + 1 for f, n in sorted(frequency.items())}
        default_idf = math.log(total + 1) + 1
        labels = tuple(sorted({label for label, _ in docs}))
        index = {label: i for i, label in enumerate(labels)}
        sums: list[dict[str, float]] = [defaultdict(float) for _ in labels]
        for label, bag in docs:
            for feature, weight in _unit_vector(bag, idf, default_idf).items():
                sums[index[label]][feature] += weight
        postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for i, centroid in enumerate(sums):
            norm = math.sqrt(sum(w * w for w in centroid.values())) or 1.0
            for feature in sorted(centroid):
                postings[feature].append((i, centroid[feature] / norm))
        return cls(
            config=config,
            labels=labels,
            idf=idf,
            default_idf=default_idf,
            postings={f: tuple(p) for f, p in postings.items()},
        )

    def scores(self, title: str, content: str) -> list[float]:
        """One score per leaf: cosine similarity to its centroid plus cue boosts."""
        vector = _unit_vector(features(title, content, self.config), self.idf, self.default_idf)
        scores = [0.0] * len(self.labels)
        for feature, weight in vector.items():
            for i, centroid_weight in self.postings.get(feature, ()):
                scores[i] += weight * centroid_weight
        hits = cue_hits(title, content)
        if hits:
            # A cue counts for its leaf and, more weakly, for every leaf of its top level: several
            # cues of one family (积水 + 下水道 + 雨水井) make the family clear even when they
            # point at different leaves.
            family: dict[str, int] = defaultdict(int)
            for code, count in hits.items():
                family[code[:2]] += count
            positions = self._positions
            touched = sorted({i for top in family for i in positions.get(top, ())})
            for i in touched:
                label = self.labels[i]
                scores[i] += self.config.cue_weight * hits.get(label, 0)
                scores[i] += self.config.top_cue_weight * family[label[:2]]
        return scores

    @cached_property
    def _positions(self) -> dict[str, tuple[int, ...]]:
        """Top-level code → the indices of its leaves."""
        positions: dict[str, list[int]] = defaultdict(list)
        for i, label in enumerate(self.labels):
            positions[label[:2]].append(i)
        return {top: tuple(indices) for top, indices in positions.items()}

    def classify(self, title: str, content: str = "") -> Classification:
        """The best leaf for an appeal, or ``1901`` when unsure."""
        if not _TOKEN_OK.search(title + content):
            return Classification(OTHER, OTHER[:2], 0.0, 0.0, (), low_confidence=True)
        scores = self.scores(title, content)
        peak = max(scores)
        if peak <= 0:  # not one known word or cue: nothing to rank
            return Classification(OTHER, OTHER[:2], 0.0, 0.0, (), low_confidence=True)
        weights = [math.exp((s - peak) / self.config.temperature) for s in scores]
        norm = sum(weights)
        ranked = sorted(
            ((label, w / norm) for label, w in zip(self.labels, weights, strict=True)),
            key=lambda item: (-item[1], item[0]),
        )
        leaf, leaf_p = ranked[0]
        top_p = sum(p for label, p in ranked if label[:2] == leaf[:2])
        alternatives = tuple(Alternative(label, round(p, 4)) for label, p in ranked[1:4])
        if top_p < self.config.min_confidence:
            guess = (Alternative(leaf, round(leaf_p, 4)), *alternatives[:2])
            return Classification(
                OTHER, OTHER[:2], round(leaf_p, 4), round(top_p, 4), guess, low_confidence=True
            )
        return Classification(leaf, leaf[:2], round(leaf_p, 4), round(top_p, 4), alternatives)


def _unit_vector(bag: Iterable[str], idf: dict[str, float], default: float) -> dict[str, float]:
    vector = {feature: idf.get(feature, default) for feature in bag}
    norm = math.sqrt(sum(w * w for w in vector.values())) or 1.0
    return {feature: w / norm for feature, w in vector.items()}


# --- data and the default model -------------------------------------------------------------


def load_labelled(text: str | None = None) -> list[LabelledAppeal]:
    """The labelled appeals (``data/appeals_labelled.csv`` unless ``text`` is given)."""
    if text is None:
        source = resources.files("services.intake.data").joinpath("appeals_labelled.csv")
        text = source.read_text("utf-8")
    rows = [LabelledAppeal(**row) for row in csv.DictReader(text.splitlines())]
    for row in rows:
        if not taxonomy.is_known(row.category_code) or not taxonomy.get(row.category_code).is_leaf:
            raise ValueError(f"{row.id}: {row.category_code!r} is not a taxonomy leaf")
        if row.split not in ("train", "heldout"):
            raise ValueError(f"{row.id}: split {row.split!r} is neither train nor heldout")
    return rows


def train_rows() -> list[LabelledAppeal]:
    """The rows the shipped model learns from (never the held-out ones)."""
    return [row for row in load_labelled() if row.split == "train"]


@cache
def default_model() -> CentroidModel:
    """The model trained on the train split with the default config (built on first use)."""
    return CentroidModel.train(train_rows(), ClassifierConfig())


def classify(title: str, content: str = "") -> Classification:
    """Classify an appeal's title and content into a taxonomy leaf (``1901`` when unsure)."""
    return default_model().classify(title, content)


def warm_up() -> None:
    """Load jieba and train the default model now (call at service start-up)."""
    default_model().classify("路灯不亮", "小区门口路灯坏了")


# --- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Accuracy of a model on some rows."""

    rows: int
    top_level_correct: int
    leaf_correct: int
    fell_back: int
    per_top_level: dict[str, tuple[int, int]]
    confusions: tuple[tuple[str, str, str], ...]

    @property
    def top_level_accuracy(self) -> float:
        """Share of rows whose top-level category was right."""
        return self.top_level_correct / self.rows if self.rows else 0.0

    @property
    def leaf_accuracy(self) -> float:
        """Share of rows whose leaf category was right."""
        return self.leaf_correct / self.rows if self.rows else 0.0


def evaluate(model: CentroidModel, rows: Iterable[LabelledAppeal]) -> Evaluation:
    """Score the model's predictions against the labels."""
    total = top_ok = leaf_ok = fell_back = 0
    per_top: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    confusions: list[tuple[str, str, str]] = []
    for row in rows:
        result = model.classify(row.title, row.content)
        total += 1
        per_top[row.top_level][1] += 1
        fell_back += result.low_confidence
        if result.top_level == row.top_level:
            top_ok += 1
            per_top[row.top_level][0] += 1
        else:
            confusions.append((row.id, row.category_code, result.code))
        leaf_ok += result.code == row.category_code
    return Evaluation(
        rows=total,
        top_level_correct=top_ok,
        leaf_correct=leaf_ok,
        fell_back=fell_back,
        per_top_level={k: (v[0], v[1]) for k, v in sorted(per_top.items())},
        confusions=tuple(confusions),
    )


def cross_validate(
    rows: Sequence[LabelledAppeal], config: ClassifierConfig, *, folds: int = 5
) -> tuple[float, float]:
    """Mean top-level and leaf accuracy over k folds of the given (train) rows."""
    ordered = sorted(rows, key=lambda r: r.id)
    top = leaf = 0.0
    for k in range(folds):
        held = [r for i, r in enumerate(ordered) if i % folds == k]
        fit = [r for i, r in enumerate(ordered) if i % folds != k]
        result = evaluate(CentroidModel.train(fit, config), held)
        top += result.top_level_accuracy
        leaf += result.leaf_accuracy
    return top / folds, leaf / folds


def _latency_ms(model: CentroidModel, rows: Sequence[LabelledAppeal], repeat: int = 5) -> float:
    model.classify(rows[0].title, rows[0].content)
    started = time.perf_counter()
    for _ in range(repeat):
        for row in rows:
            model.classify(row.title, row.content)
    return (time.perf_counter() - started) * 1000 / (repeat * len(rows))


def results_markdown(result: Evaluation, *, train: int, cv: tuple[float, float], ms: float) -> str:
    """The measured-results block of docs/classification.md."""
    names = {c.code: c.name_zh for c in taxonomy.top_levels()}
    lines = [
        f"Held-out rows: **{result.rows}** (train rows: {train}).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| top-level accuracy (held-out) | **{result.top_level_accuracy:.1%}** "
        f"({result.top_level_correct}/{result.rows}) |",
        f"| leaf accuracy (held-out) | **{result.leaf_accuracy:.1%}** "
        f"({result.leaf_correct}/{result.rows}) |",
        f"| answered 1901 for low confidence (held-out) | {result.fell_back} |",
        f"| 5-fold CV on train rows: top level / leaf | {cv[0]:.1%} / {cv[1]:.1%} |",
        f"| mean latency per appeal, warm | {ms:.3f} ms |",
        "",
        "Per top-level category (held-out, correct/total):",
        "",
        "| code | category | correct | total |",
        "|---|---|---|---|",
    ]
    for code, (ok, n) in result.per_top_level.items():
        lines.append(f"| {code} | {names.get(code, '?')} | {ok} | {n} |")
    lines += ["", "Top-level misses (held-out): id, label → prediction:", ""]
    lines += [f"- {rid}: {label} → {pred}" for rid, label, pred in result.confusions] or ["- none"]
    return "\n".join(lines)


_DOCS = Path(__file__).resolve().parents[2] / "docs" / "classification.md"
_START, _END = "<!-- results:start -->", "<!-- results:end -->"


def _write_docs(block: str) -> None:
    text = _DOCS.read_text("utf-8")
    head, _, rest = text.partition(_START)
    _, _, tail = rest.partition(_END)
    _DOCS.write_text(f"{head}{_START}\n{block}\n{_END}{tail}", "utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--evaluate`` (held-out), ``--cv`` (train folds), ``--write-docs``."""
    parser = argparse.ArgumentParser(prog="python -m services.intake.classifier")
    parser.add_argument("--evaluate", action="store_true", help="accuracy on the held-out rows")
    parser.add_argument("--cv", action="store_true", help="5-fold CV on the train rows only")
    parser.add_argument("--write-docs", action="store_true", help="update docs/classification.md")
    args = parser.parse_args(argv)
    rows = load_labelled()
    train = [r for r in rows if r.split == "train"]
    config = ClassifierConfig()
    cv = cross_validate(train, config)
    print(f"5-fold CV on {len(train)} train rows: top level {cv[0]:.1%}, leaf {cv[1]:.1%}")
    if args.cv and not (args.evaluate or args.write_docs):
        return 0
    heldout = [r for r in rows if r.split == "heldout"]
    model = default_model()
    result = evaluate(model, heldout)
    block = results_markdown(result, train=len(train), cv=cv, ms=_latency_ms(model, heldout))
    print(block)
    if args.write_docs:
        _write_docs(block)
        print(f"\nwrote {_DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
