"""The crisis screen's rule tables: readable regular expressions over normalized text (see screen.normalize).

Every rule speaks of the writer (or someone with them right now): bare topic words ("suicide", "self-harm",
"overdose") never match on their own, so news, research, teaching and third-person questions pass. Rules are
named `category:name`; the name is what the screen reports (never the message text).
"""

from __future__ import annotations

import re

# --- shared pieces -----------------------------------------------------------------------------------------
_PERSON_NOUNS = (r"dad|father|mom|mum|mother|stepfather|stepdad|stepmom|stepmother|husband|wife|partner|boyfriend|"
                 r"girlfriend|ex|uncle|aunt|brother|sister|grandpa|grandfather|grandma|cousin|coach|teacher|boss|"
                 r"parents?|family|guardian|roommate|neighbou?r|coworkers?|classmates?|kids?|son|daughter|baby|"
                 r"friend|manager|landlord|pastor|priest|babysitter")
_TARGET = (rf"(him|her|them|someone|somebody|people|everyone|everybody|my (?:\w+ ){{0,2}}(?:{_PERSON_NOUNS})|"
           r"the (?:people|kids|students|teachers?|guy|bitch|bastard)|that (?:guy|bitch|bastard|man|woman))\b")
_AGENT = (rf"\b(he|she|they|someone|somebody|a (?:man|guy|woman|stranger)|my (?:\w+ ){{0,2}}(?:{_PERSON_NOUNS}))")
_VIOLENT = r"(kill|killing|murder|murdering|stab|stabbing|shoot|shooting|strangle|strangling|hurt|hurting|" \
           r"beat|beating|poison|poisoning|attack|attacking|harm|harming)"
_ABUSE_VERB = (r"(hits?|hitting|beats?|beating|chok(?:es|ed|ing)|punch(?:es|ed)|kick(?:s|ed)|slap(?:s|ped)|"
               r"strangl(?:es|ed)|rap(?:es|ed)|molest(?:s|ed)|touch(?:es|ed)|hurts|hurt|abus(?:es|ed)|burn(?:s|ed)|"
               r"lock(?:s|ed)|threw|throws|grabb(?:ed|s)|forc(?:es|ed)|shov(?:es|ed)|attack(?:s|ed)|starv(?:es|ed)|whips?|whipped|belts?)")
_HEIGHT = r"(bridge|roof|rooftop|building|garage|cliff|balcony|ledge|tower|overpass|window|train tracks|platform)"
_PILLS = (r"(pills|tablets|meds|medication|medicine|tylenol|paracetamol|acetaminophen|ibuprofen|sleeping pills|"
          r"xanax|painkillers|capsules|insulin|antidepressants)")

# Medicines people stockpile, by name (a few common ones; "pills", "meds" are in _PILLS).
_DRUGS = (r"(oxycodone|oxy|oxys|codeine|tramadol|morphine|fentanyl|hydrocodone|vicodin|percocet|sertraline|zoloft|"
          r"fluoxetine|prozac|citalopram|escitalopram|lexapro|amitriptyline|quetiapine|seroquel|lithium|zopiclone|"
          r"diazepam|valium|lorazepam|ativan|klonopin|clonazepam|benzos|opioids|painkillers|sleeping pills|pills|meds|"
          r"tablets|insulin|tylenol|paracetamol|acetaminophen)")

RULES: dict[str, list[tuple[str, str]]] = {
    "medical_emergency": [
        ("took_many_pills", rf"\b(took|taken|swallowed|ate|downed|have taken|i've taken) (?:\w+ ){{0,3}}((?:[4-9]|\d{{2,}})"
                            rf"(?!\s*(?:mg|ml|mcg|g)\b)|a lot of|too "
                            rf"many|all (?:of )?(?:my|the|his|her)|(?:an?|the) (?:whole |entire )?(?:bottle|pack|box|handful|strip) of|a "
                            rf"bunch of|loads of|lots of|half a bottle of)\b.{{0,30}}\b{_PILLS}"),
        ("turning_blue", r"\b(turning|turned|going|lips are) (blue|grey|gray)\b|\btook too much\b.{0,40}\b(blue|breath\w*|"
                         r"wake|respond\w*|passed out|unconscious)\b"),
        ("overdosed", r"\b(i|i've|i have|i just|i think i|he|she|they|my \w+) (just |may have |might have )?"
                      r"(overdosed|took an overdose|am overdosing|is overdosing)\b|\bi'm overdosing\b"),
        ("not_breathing", r"\b(isn't|is not|not|stopped|wasn't|aren't) breathing\b|(?<!\bi )\b(won't|will not|doesn't|isn't|"
                          r"can't get (?:him|her|them) to) (wake up|waking up|respond(?:ing)?)\b|\bunresponsive\b|"
                          r"\bunconscious\b"),
        ("cant_breathe", r"\b(can't|cannot) breathe\b|\b(throat|tongue) is (closing|swelling)\b|\banaphyla\w+"),
        ("chest_pain", r"\b(crushing|severe|terrible|really bad) chest pain\b|\bchest pain\b.{0,40}\b(arm|jaw|numb|"
                       r"sweat\w*|can't breathe)\b"),
        ("bleeding", r"\b(won't|will not|can't|cannot|doesn't) stop (the )?bleeding\b|\bbleeding (a lot|heavily|badly|"
                     r"everywhere|won't stop)\b|\bcut (way |too )+deep\b|\blost (a lot of|so much|too much) blood\b"),
        ("poison", r"\b(drank|drunk|swallowed|ate|drink) (some |a bottle of |a cup of |the )?(bleach|antifreeze|poison|"
                   r"drain cleaner|rat poison|detergent|pesticide|weed killer)\b|\bswallowed (a |some |two |the )?(button "
                   r"batter(y|ies)|batter(y|ies)|magnets?)\b|\b(drank|drunk|swallowed|ate) (some )?(of )?(the )?(dishwasher|"
                   r"washing up|laundry|cleaning) (liquid|tablets?|pods?|fluid|powder)\b"),
        ("stroke_signs", r"\b(one side of|half (?:of )?) ?(his|her|my|their) face\b.{0,25}\bdroop\w*|\bface (is |was )?"
                         r"droop(ing|y)\b|\bcan't feel (the )?(left|right) side of (my|his|her) (body|face)\b"),
        ("collapsed", r"\b(collapsed|fainted|passed out|on the floor|fell down the stairs)\b.{0,40}\b(not|isn't|won't|"
                      r"can't get (?:him|her|them) to) (answer\w*|respond\w*|mov\w*|wak\w*)\b"),
        ("airway", r"\b(lips|tongue|throat|face) (is |are )?swell\w*\b.{0,40}\b(breath\w*|swallow\w*)\b|\binhaler "
                   r"(isn't|is not|doesn't|not|won't) (work|help)\w*\b|\bchoking\b.{0,30}\bcan't (breathe|talk|speak|cough)\b"),
        ("blood_bone", r"\b(throwing up|vomiting|coughing up|puking) blood\b|\bbone (is )?(showing|sticking out|poking out)\b"),
        ("barely_responding", r"\bbarely (responding|responsive|breathing|conscious)\b|\bon (the|her|his|their) floor\b"
                              r".{0,60}\b(since last night|since yesterday|cold and|can't get up)\b"),
        ("asthma", r"\basthma attack\b.{0,60}\b(won't stop|isn't stopping|not stopping|can barely|can't breathe|not "
                   r"working|isn't working|used it \d+)\b"),
        ("bite_sting", r"\b(snake|rattlesnake|viper|adder|scorpion|black widow|brown recluse)\b.{0,15}\bbit\w* (me|him|her|"
                       r"us|my \w+)\b|\bbitten by a (snake|rattlesnake|viper|adder)\b"),
        ("headache", r"\bworst headache of my life\b|\bthunderclap headache\b|\bheadache\b.{0,60}\b(stiff neck|neck is "
                     r"stiff)\b"),
        ("blood_sugar", r"\b(blood sugar|sugar|glucose|bg)\b.{0,40}\b(shaking|can't think|confused|passing out|slurring)\b"),
        ("stroke_seizure", r"\b(i'm having|is having|i think i'm having|just had) a (seizure|stroke|heart attack)\b"),
        ("lang_es", rf"\b(tome|me tome|se tomo) (muchas|demasiadas|todas las|un frasco de) (pastillas|pildoras)\b|"
                    r"\b(tome|tuve) una sobredosis\b|\b(tome|me tome|se tomo|trague) (un|el|una|la) (frasco|caja|"
                    r"botella) (entero |entera )?de\b|\bno (puedo|puede|podemos) respirar\b|\bdolor (muy )?(fuerte )?en el "
                    r"pecho\b|\b(esta|estoy|esta) convulsionando\b|\btiene (una )?convulsiones\b"),
        ("lang_fr", r"\bj'ai (pris|avale) trop de (medicaments|cachets|pilules|comprimes)\b|\bj'ai fait une (overdose|"
                    r"surdose)\b|\bj'ai (pris|avale) (toute|tout|toutes) (la|le|les) (boite|flacon|plaquette|comprimes|"
                    r"pilules|medicaments)\b|\b(je|il|elle) ne (peux|peut) (pas|plus) respirer\b|\b(mange|avale) des "
                    r"champignons\b.{0,60}\b(vomit|pale|convuls|respire)\w*|\bdouleur (\w+ )?(a|dans) la poitrine\b.{0,40}"
                    r"\b(respirer|bras)\b"),
        ("lang_de", r"\bzu viele (tabletten|pillen|medikamente) (genommen|geschluckt)\b|\buberdosis genommen\b|"
                    r"\bkann (nicht|kaum) (mehr )?atmen\b|\bkrampfanfall\b"),
        ("lang_pt", r"\btomei (muitos|muitas|todos os|todas as) (comprimidos|remedios|pilulas)\b|\bnao (consigo|"
                    r"consegue) respirar\b"),
        ("lang_it", r"\bho preso troppe (pillole|pastiglie|compresse)\b"),
        # round 6: a swallowed button battery or magnet, said in Spanish, Portuguese, French, German or Italian
        ("battery_lang", r"\b(se trago|me trague|trago|se comio) (una |la |un |el )?(pila|bateria|boton|iman|imanes)\b|"
                         r"\b(engoliu|engoli) (uma |a |um |o )?(bateria|pilha|ima|imas)\b|\ba avale (une |la |un |des )?"
                         r"(pile|piles|batterie|aimants?)\b|\b(batterie|knopfzelle|magnete?n?) (verschluckt|geschluckt)\b|"
                         r"\bha (ingoiato|inghiottito) (una |la |delle )?(pila|batteria|calamita|calamite)\b"),
        # round 6: romanized Hindi (chest pain, not breathing, unconscious) and Tagalog (cannot breathe)
        ("lang_hi", r"\b(seene|sine|chhati|chaati) (mein|me|main) (\w+ ){0,2}dard\b.{0,60}\b(pasina|paseena|saans|"
                    r"haath|baazu|ulti)\b|\bsaans (nahi|nahin) (aa|le pa|le paa)\w* (rahi|raha|rahe)\b|\bbehosh (ho gay[aie]|"
                    r"pad[aie]|hai)\b"),
        ("lang_tl", r"\bhindi (siya |ako |sya )?(makahinga|humihinga)\b"),
    ],
    "suicide": [
        ("kill_myself", r"\b(kill|killing|end|ending|take|taking|off|offing|unalive|unaliving) (myself|my ?self|my own "
                        r"life|my life)\b(?! back| in (?:a|another|the) (?:new|different|right|better) direction| into my own hands| one "
                        r"day at a time| (?:more )?seriously)"),
        ("want_to_die", r"\b(want|wanted|wanting|going|plan|planning|ready|need|deserve|trying|try|about) to (die|kill "
                        r"myself|end it(?: all)?|end my life|not exist|be dead|unalive|disappear forever|stop existing)\b"),
        ("going_to_od", r"\b(going|gonna|want|wanna|plan|planning|about|ready) to (overdose|od)\b(?! on (?!(?:my|the|"
                        r"all|his|her|pills|meds|tablets)\b))"),
        ("rather_dead", r"\b(i'd|i would|i'll|i) rather (be dead|die|not (?:be alive|exist|wake up))\b(?! than (?:sing|go|do|eat|"
                        r"watch|listen|work|talk|be seen))|\b(hang|hanging|hanged|drown|drowning|shoot|shooting|poison|"
                        r"poisoning|overdose|overdosing|suffocate) myself\b|\b(search\w*|googl\w*|look\w* up|research\w*) "
                        r"(for )?(ways|how|methods) to (die|kill myself|end it|end my life)\b"),
        ("wish_dead", r"\bwish (i was|i were|i'd|i could) (dead|never born|die|disappear forever|not wake up)\b|\bwish "
                      r"(a|the|some) (bus|car|truck|train|drunk driver) would (hit|run over|kill) me\b"),
        ("dont_want_to_live", r"\b(don't|do not|no longer|not) (really )?want to (live|be alive|be here anymore|exist|"
                              r"wake up|go on|keep living|keep going)\b"),
        ("no_point", r"\b(no|don't see (?:the|any)|there's no|what's the) (reason|point) (to|in|of) (live|living|go on|"
                     r"going on|being alive|be alive|staying alive|keep going|carry on)\b"),
        ("better_off", r"\bbetter off (dead|without me|if i (?:was|were|wasn't|weren't)(?: dead| gone| here)?)\b|"
                       r"\b(better|easier|happier) (place |for everyone |for them |for my family )?(without me|if i "
                       r"(?:just )?(?:was|were|wasn't|weren't|disappeared|died|was gone|were gone))\b|\bdisappear(ed)? "
                       r"(for good|forever|permanently)\b"),
        ("end_it", r"\b(end|ending|finish) (it|it all|everything|things) (all )?(tonight|today|now|soon|for good)\b|"
                   r"\bend(ing)? it all\b|\bwant (it all|everything|my life|life) to (end|be over|stop)\b"),
        ("suicidal", r"\b(i'm|i am|i feel|feeling|i've been|i get|i got|i become|makes me|i was)( \w+){0,2} suicidal\b|"
                     r"\b(i|i'm|i've|my|having|have|had)\b[^.?!]{0,30}\bsuicidal (thoughts|ideation|urges|feelings)\b|"
                     r"\bsuicidal (thoughts|ideation|urges|feelings) (again|tonight|right now|today)\b|"
                     r"\b(i|i'm|i've|i'll|me|my)\b.{0,25}\b(commit|committing|attempt|attempting|plan|planning|planned) (suicide|my "
                     r"suicide)\b|\b(planning|planned|plan|plans for) my (suicide|death)\b|"
                     r"\b(i|i'm|i keep|keep) (think|thinking|thought) (about|of) (suicide|killing myself|dying|ending it)\b"),
        ("thinking_of_it", r"\b(can't stop|keep|always|constantly|been|i'm|i am) (thinking|dreaming|fantasi\w*) (about|of) "
                           r"(suicide|killing myself|ending it|ending my life|dying|my death|not being here)\b|"
                           r"\b(not going to|won't) (be alive|be here|make it) (next|by|through|tomorrow|much)\b|"
                           r"\bmake it through (the|this|tonight) ?(night)?\b.{0,20}$|\bdon't think i'll make it\b|"
                           r"\b(life|living|my life) (isn't|is not|ain't|no longer) worth (living|it)\b|\b(nobody|no one) "
                           r"(will|would|is going to) (miss|care about|notice) me\b|\b(in front of|under) (a|the) (train|bus|"
                           r"truck|car)\b|\boverdos\w* on\b(?! (chocolate|candy|sugar|caffeine|coffee|netflix|tv|anime|sweets|cake|carbs|pizza)\b)|\bi'm ending it\b|\bstop breathing\b.{0,5}$|\bwant(s)? to (just )?"
                           r"stop breathing\b|\b(?:(?:at|by|near|looking at|staring at|thinking about|go(?:ing)? to|walk(?:ed|ing)? "
                           r"to) the (?:train|railway|rail)|(?:on|onto|lie (?:down )?on|lay (?:down )?on|lying on|laying on|"
                           r"standing on|sitting on|walk(?:ing)? (?:onto|along|down)) the(?: train| railway| rail)?) tracks\b"
                           r"(?!.{0,60}\b(?:my (?:friend|mom|mum|dad|ride|bus)|station|building|construction|new line|"
                           r"photos?|pictures?|train home)\b)"),
        ("means_pills", rf"\b(sav(?:ed|ing) up|stockpil\w*|hoard\w*|collect(?:ed|ing)|sav(?:ed|ing)) (my |all my |"
                        rf"enough |up enough )?{_PILLS}|\bhow many\b.{{0,40}}\b{_PILLS}\b.{{0,40}}\b(die|kill|lethal|"
                        r"not wake up|never wake up|overdose|fatal|end it)\b|\blethal dose\b"),
        ("means_other", r"\b(bought|got|have|tied|made) (a |the )?(rope|noose)\b|\b(gun|pistol|rifle) (is )?loaded\b|"
                        r"\bloaded (gun|pistol)\b|\b(easiest|painless|painlessly|quickest|fastest|best|surest) (way|ways|"
                        r"method|methods) to (die|end (?:it|my life|things)|kill myself|go)\b"),
        ("height", rf"\b(i'm|i am) (standing |sitting )?(on|at) the (edge of the |top of the )?{_HEIGHT}\b(?!.{{0,20}}\b("
                   r"having|drinking|enjoying|fixing|cleaning|repairing|taking (?:photos|pictures)|watching the (?:sunrise|sunset|fireworks|game|view)|waiting for (?:the|my) "
                   r"(?:train|bus)|with (?:my )?(?:friends|coffee|a drink))\b)|"
                   rf"\b{_HEIGHT}\b.{{0,60}}\b(jump|jumping)\b|\b(jump|jumping) (off|from)\b"),
        ("swerve", r"\b(think\w* (about|of)|want to|urges? to|tempted to|imagin\w*|pictur\w*|keep) (just )?(swerv|jerk|"
                   r"yank)\w* (the wheel |my car |the car )?(into|off|across)\b"),
        ("vehicle", r"\b(drive|driving|crash|crashing|steer\w*) (my car |the car )?(into|off) (a |the )?(wall|tree|"
                    r"traffic|oncoming|bridge|cliff|truck|river)\b|\bstep in front of (a |the )?(train|bus|car|truck)\b"),
        ("farewell", r"\b(suicide|goodbye) (note|letter)s?\b|\bthis is my last (message|post|night)\b|\bgoodbye "
                     r"(everyone|forever|world|all)\b|(?<!she )(?<!he )(?<!they )(?<!it )\bwon't be (around|here) (much longer|anymore|tomorrow)\b|"
                     r"\bsaid (all )?my goodbyes\b|\b(wrote|written|writing|made) (my|a) (will|goodbye)\b.{0,40}"
                     r"\bgoodbye|\bwon't need (anything|it|them|my \w+) (after|anymore|where i'm going)\b|\bno one would (even )?"
                     r"(notice|care|miss me) if i (was|were|'m|am) (gone|dead)\b|\bgave (away )?(my|all my) (dog|cat|"
                     r"pets?|things|stuff|belongings) (away|to)\b|\bgiving away (my|all my) (things|stuff|belongings)\b"),
        ("burden", r"\b(i'm|i am) (just )?a burden\b.{0,60}\b(stop being|not be|won't be|for good|gone|anymore)\b"),
        ("never_wake", r"\b(sleep|go to sleep|fall asleep|close my eyes) and (never|not) wake up\b|\b(hope|hoping|pray|"
                       r"praying) (that )?i (don't|won't|never|do not|will not) wake up\b|\benough to (make sure i )?"
                       r"(not|never|don't) wake up\b|\b(i'm|i am) (just )?waiting to die\b"),
        ("check_out", r"\b(check|checking) out (early|tonight|for good|permanently|of life)\b|\blog(ging)? out of life\b|"
                      r"\blast time you('ll| will) (ever )?hear from me\b|\b(let|letting) the (river|sea|ocean|water|waves) "
                      r"take me\b|\bwalk into the (sea|ocean|lake|river) and (just )?(keep|not stop|never)\b|\b(going|driving|"
                      r"walking|heading) to the (lake|river|sea|ocean|woods|bridge|cliffs?|tracks)\b.{0,40}\bnot coming back\b"),
        ("car_garage", r"\b(car|engine)\b.{0,30}\brunning\b.{0,25}\b(closed |shut )?garage\b|\bin the (closed |shut )?garage "
                       r"with the (engine|car) running\b"),
        ("ready_tonight", r"\b(going to|finally going to|gonna|ready to|will) do it\b.{0,60}\b(everything|it all|all) "
                          r"(is )?(ready|planned|set)\b|\b(tonight|today)\b.{0,40}\b(finally|i'm) (going to|ready to) do it\b"),
        ("cant_go_on", r"\b(can't|cannot) (do this|go on|take (?:it|this)|keep going) any ?more\b.{0,60}\b(tonight|"
                       r"goodbye|the night|for good|end it)\b|\btonight('s| is) the night\b.{0,40}\bcan't\b"),
        ("afterlife", r"\b(to|into|join|see you in) the afterlife\b|\bdone with (life|living|existing|being alive)\b"),
        ("off_building", rf"\b(yeet|throw|fling|launch)\w* myself (off|from|out)\b|\b(yeet|throw|fling|launch)\w* "
                         rf"myself\b.{{0,30}}\b{_HEIGHT}\b"),
        ("kys_self", r"\b(i should|i'll|i will|might as well|i'm going to|i want to|i'm about to|about to) (just )?kys\b|"
                     r"\bkys\b.{0,80}\b(going to do it|i'll do it|will do it|might do it|do it tonight|i should)\b"),
        ("slang", r"\bctb\b|\bsewer ?slide\b"),
        ("plan_date", r"\b(i have|i've got|i've made|i made|got) (a|the|my) plan and (a|the) (date|time|place|method)\b|"
                      r"\bgo(ing)? through with it\b.{0,40}\b(tonight|today|tomorrow|this weekend)\b|\b(tonight|today|"
                      r"tomorrow)('s| is)? the (night|day)\b.{0,40}\bgo through with it\b|\bfinally go(ing)? through with "
                      r"it\b|\bif tonight('s| is) the night\b|\bdon't plan on (seeing|being around|making it to|living to|"
                      r"turning)\b|\b(wouldn't|won't|not going to) (make it|live) past (\d+|thirty|forty|fifty|twenty\w*|my "
                      r"\w+ birthday|this year)\b"),
        ("after_gone", r"\b(after|once) i'm gone\b(?! (?:on|for|to|from|at|away))|\b(good homes?|taken care of|looked "
                       r"after)\b.{0,30}\bbefore i go\b|\bwon't be (anyone's|a|your|everyone's) (problem|burden)\b.{0,20}"
                       r"\b(much longer|for long|anymore|soon)\b|\bdon't worry about me (after|from) (today|tonight|"
                       r"tomorrow)\b|\blog(ging)? off for good\b"),
        ("sleep_forever", r"\b(i|i just|just) (want|wanna|wish i could|need) to sleep forever\b|\bnever (have to )?(open "
                          r"my eyes|wake up) again\b"),
        ("means_ask", r"\bhow (high|far|tall)\b.{0,40}\b(fall|drop|jump)\b.{0,40}\b(sure|die|fatal|survive|kill|"
                      r"certain)\b|\b(googl\w*|search\w*|research\w*|look\w* up|reading about)\b.{0,15}\b(painless|"
                      r"reliable|quick|easy) (ways|methods)\b(?! to (?!die|end|go|kill)\w+)|\b(what's|what is) the (most "
                      r"reliable|surest|most painless|least painful|quickest) way\s*[.?!]|\b(take|taking|swallow|"
                      r"swallowing) (the |a )?(whole|entire) (bottle|box|pack|packet)\b"),
        ("stockpile", rf"\b(stockpil\w*|hoard\w*|sav(?:ed|ing) up|been saving|sav(?:e|ing) (?:up )?my) (?:my |all my |"
                      rf"up )?{_DRUGS}\b"),
        ("voices", r"\bvoices?\b.{0,30}\b(tell|telling|say|says|saying|told) (me )?(i should|to|that i should) (jump|die|"
                   r"kill myself|end it|hurt myself|do it)\b"),
        ("goodbye_silence", r"\b(goodbye|thank you for everything)\b.{0,120}\b(won't|isn't|not|doesn't|stopped) "
                            r"(answer\w*|pick\w* up|respond\w*|reply\w*)\b"),
        ("insurance", r"\b(life insurance|the policy|insurance policy)\b.{0,150}\b(it's been (two|2) years|i checked|"
                      r"been thinking about (that|it)|worth more dead|than i (ever )?could)\b"),
        ("given_away", r"\b(gave|giving|given) (away )?(my|all my) (\w+ ){0,2}(to (my|the|a) (\w+ )?\w+|away)\b.{0,80}"
                       r"\b(before i go|good homes?|won't need|say bye|goodbye|deleted my)\b|\bgiving (away )?(all )?my "
                       r"(stuff|things|belongings)( away)?\b"),
        ("ending_everything", r"\b(thinking|think|thought) (about|of) (ending (everything|it all|my life)|killing myself)\b|"
                              r"\b(going to|gonna|will|i'll) walk into the (sea|ocean|lake|river|water)\b"),
        ("lang_es", r"\bquiero morir(me)?\b|\b(termino|acabo|terminar|acabar) con todo\b(?! el| lo| la| mi)|\besta "
                    r"noche es la noche\b|\btengo las pastillas (guardadas|listas)\b|\bcartas (de despedida|para mis "
                    r"hijos)\b|\b(me quiero|me voy a|voy a|quiero) (matar(?:me)?|suicidar(?:me)?)\b|"
                    r"\b(matarme|suicidarme|quitarme la vida)\b|\bno quiero (seguir )?vivir\b"),
        ("lang_fr", r"\b(je veux|j'ai envie de|envie de) (mourir|me suicider|me tuer|en finir)\b|\bme suicider\b|"
                    r"\bme jeter (sous|du haut|d'un|par la)\b|\blettre d'adieu\b|"
                    r"\bje pense (au suicide|a me suicider|a mourir|a me tuer)\b|"
                    r"\bje vais me tuer\b|\bje (ne )?veux plus vivre\b"),
        ("lang_de", r"\bich will sterben\b|\b(mich|mir) (umbringen|toten|das leben nehmen)\b|\b(will|mochte|kann) nicht mehr leben\b|"
                    r"\bselbstmord (begehen|machen)\b|\bdenke (daran|dran),? mich umzubringen\b|\bmich umzubringen\b|"
                    r"\babschiedsbrief\b|\bich wei(ss|ß) (schon|genau),? wie ich es mache\b|\bwo und wann\b"),
        ("lang_nl", r"\bik wil (dood|niet meer leven)\b|\bzelfmoord (plegen|denk)\b"),
        ("lang_pt", r"\bquero morrer\b|\b(quero|vou|penso em|vontade de) (me matar|me suicidar)\b|"
                    r"\bnao quero mais viver\b"),
        ("lang_hi", r"\b(marna|mar jana|mar jaana|mar jaun|mar jaaun) (chaht[aie]|chahti) (hu|hoon|hun|h)\b|\bjeene ka "
                    r"(mann|man|mood) (nahi|nahin)\b|\b(khudkushi|aatmahatya|suicide) (kar lunga|kar lungi|karna chaht\w*|"
                    r"karunga|karungi|kar leta|kar leti)\b|\b(sab|sab kuch) khatam kar (dunga|dungi|doonga|doongi)\b|"
                    r"\bapni jaan (de dunga|de dungi|le lunga|le lungi)\b"),
        ("lang_tl", r"\bgusto ko (na )?(lang )?(na )?(mamatay|magpakamatay)\b|\bmagpapakamatay (na )?ako\b|\bayoko na "
                    r"(mabuhay|sa buhay)\b"),
        ("lang_it", r"\bvoglio morire\b|\b(uccidermi|ammazzarmi|suicidarmi|togliermi la vita)\b|"
                    r"\bnon voglio piu vivere\b|\bfarla finita\b"),
    ],
    "harm_to_others": [
        ("intent", rf"\b(going to|i will|i'll|want to|wanna|i swear i'll|about to|thinking (?:about|of)|planning "
                   rf"(?:to|how to|on)|i could|i'm gonna|thoughts (?:about|of)|urges? to|fantasi\w+ about) "
                   rf"(?:\w+ ){{0,2}}{_VIOLENT} (up )?{_TARGET}"),
        ("shoot_anyone", rf"\b(i'll|i will|going to|i'm going to) (shoot|stab|kill|hurt) (anyone|anybody|whoever)\b|"
                         rf"\b(knife|gun|bat|weapon)\b.{{0,40}}\b(use it on|going to use it|gonna use it) (him|her|them|"
                         rf"my \w+)\b"),
        ("until_dead", r"\buntil (he|she|they) (stops?|stop) breathing\b|\buntil (he's|she's|they're) dead\b"),
        ("weapon_to_place", r"\b(bring|bringing|take|taking|brought|carry|carrying) (a |my |my \w+'s |his |the )?(\w+ )?"
                            r"(gun|guns|knife|rifle|weapon|bomb)s? to (school|work|class|the office|church|campus)\b"),
        ("shook_baby", r"\b(i )?(shook|shake|shaking) (the|my|our) baby\b(?!'s| rattle| bottle| formula| toy)"),
        # round 6: poisons that would not be found, a bone-breaking promise, driving into a crowd
        ("poison_plan", r"^(?!.*\b(novel|story|plot|character|screenplay|fiction|mystery|book|game|tv show|episode)\b).*("
                        r"\bpoisons?\b.{0,40}\b(don't|doesn't|won't|wouldn't|can't) (show up|be detected|be traced)|"
                        r"\bundetectable (poisons?|ways to kill)\b|\b(poison\w*)\b.{0,60}\b(tox(icology)? screen|autopsy)\b)"),
        ("break_bones", r"\b(going to|i'll|i will|i'm|i am|about to|want to) (\w+ )?(break|breaking|smash|smashing|bash|"
                        r"bashing|bust|busting) (his|her|their|that \w+'s) (jaw|face|nose|skull|legs?|arms?|neck|teeth|"
                        r"head|knees?|ribs)\b"),
        ("into_crowd", r"\b(picture|picturing|imagin\w*|think\w* (about|of)|want to|going to|i'll|fantasi\w* about|urges? "
                       r"to|plan\w* (to|on)) (\w+ ){0,2}(driv\w*|plow\w*|ram\w*|steer\w*|crash\w*) (my |the |a )?(car |truck "
                       r"|van )?(into|through) (a |the )?(crowd|people|pedestrians|protest\w*|parade|market|festival)\b"),
        ("shoot_up", r"\bshoot(ing)? up (my |the |a |our )?(school|office|work|class|mall|church|place|campus)\b"),
        ("make_pay", r"\bmake (them|him|her|everyone) (all )?pay\b.{0,80}\b(hurt|kill|plan|gun|knife)\w*"),
        ("list_names", r"\b(i have|i've got|i made|made|keeping|keep) a list of (names|people)\b(?!.{0,40}\b(invite|"
                       r"guest|party|wedding|christmas|thank|card))"),
        ("smother", r"\b(smother|smothering|suffocat\w*) (the|my|our) (baby|newborn|infant|son|daughter|kid)\b"),
        ("armed_waiting", r"\b(weapons?|guns?|ammo|ammunition|knife|tire iron|bat|crowbar|machete)\b.{0,120}\b(get what "
                          r"(they|he|she) deserves?|will be sorry|waiting for (him|her|them)( to come out)?)\b|\bwaiting "
                          r"for (him|her|them) (to come out|outside)\b.{0,80}\b(tire iron|bat|knife|gun|crowbar)\b"),
        ("lang_es", r"\bvoy a (matarlo|matarla|matarlos|matarte|matar a)\b|\b(quiero|voy a) (matarlo|matarla)\b"),
        ("lang_fr", r"\bje (vais|veux) (le|la|les|te) tuer\b|\bne se relevera (pas|plus|jamais)\b"),
        ("lang_de", r"\bich (bringe|werde) (ihn|sie|dich) (\w+ )?(um|umbringen|toten)\b"),
        ("lang_pt", r"\bvou (mata-lo|mata-la|matar ele|matar ela)\b"),
        ("lang_it", r"\b(lo|la) (ammazzo|uccido)\b|\bvoglio (ucciderlo|ucciderla|ammazzarlo)\b"),
    ],
    "abuse": [
        ("hurts_me", rf"{_AGENT} (?!never |doesn't |don't |won't |didn't |wouldn't )(?:\w+ ){{0,2}}{_ABUSE_VERB} (me|us)\b(?! out)|{_AGENT} (?:\w+ ){{0,2}}push(?:es|ed) me "
                     r"(down|into|against|off|over|to the (?:ground|floor))\b"),
        ("threat", r"\bthreat\w* to (kill|hurt|beat|hit|burn) me\b|\b(says|said|told me|swears|swore) (he|she|they)('ll| will|"
                   r" would|'d| is going to| are going to) (kill|hurt|beat|hit|burn) me\b|\b(afraid|scared|terrified|fear)\b.{0,40}\b(will|'ll|"
                   r"is going to|going to|might|would) (kill|hurt|beat|hit) me\b"),
        ("being_abused", r"\b(i'm|i am|i've been|been|i was|i got) (being )?(abused|raped|molested|sexually assaulted|"
                         r"beaten up|trafficked|groomed)\b|\bi (get|got|keep getting) (beaten|hit|abused|raped|slapped|punched|"
                         r"kicked)\b"),
        ("secret", r"\b(says|said|tells|told|makes) me (i )?(not to|can't|cannot|mustn't|shouldn't|never) tell\b|"
                   r"\b(says|said|tells me) (it's|it is) our (special |little )?secret\b|"
                   r"\bsays (i )?(can't|cannot|mustn't) tell (anyone|anybody|my (?:parents|mom|dad|mum))\b"),
        ("not_safe_home", r"\b(home|my house) (isn't|is not|never feels|doesn't feel) safe\b|\b(not|isn't) safe (at|to "
                          r"go) home\b"),
        ("neck", r"\b(he|she|they|my (?:boyfriend|husband|partner|wife|girlfriend|dad|father|stepdad|mom|mum|mother|ex)) "
                 r"(puts?|put|had|wrapped|wraps|keeps putting) (his|her|their) hands? (around|round|on) my (neck|throat)\b|"
                 rf"{_AGENT} (?:\w+ ){{0,2}}drag(s|ged)? me (by|across|down|along|through) (my|the) (hair|floor|arm|house)\b"),
        ("coerced", r"\b(made|makes|forced|forces) me (to )?do (stuff|things|sexual things)( to him| to her)? (i )?(didn't|don't|"
                    r"did not|do not) want\b|\b(threat\w* to|says (?:he|she)(?:'ll| will| would|'d)|said (?:he|she)(?:'d| would|"
                    r"'ll| will)) (kill|hurt|make) (my (dog|cat|pet|kids|children|family|mom|mum|sister|brother|baby)|me disappear)\b"),
        ("control", r"\bwon't let me (leave|go out|see my|talk to|eat|sleep)\b|\b(took|takes|controls|smashed) my "
                    r"(phone|money|passport|keys)\b.{0,40}\b(won't|can't|locked|let me)\b|\bwon't let me leave\b|\b(holds|kept|keeps|"
                    r"took|has taken|hid|hides) my passport\b.{0,60}\b(owe|leave|marry|can't|won't)\b"),
        ("said_no", r"\bi said no and (he|she|they) (didn't|did not|wouldn't|would not|kept going|still)\b|\b(he|she|"
                    r"they) (didn't|wouldn't) stop when i (said no|told (him|her|them) to stop)\b"),
        ("pictures", r"\b(makes|made|wants|asks|asked|forces|forced) (me|her|him) (to )?(send|take)( him| her| them)? "
                     r"(pics|pictures|photos|nudes|naked)\b|\btakes (pictures|photos|pics) of (me|her|him)\b.{0,40}"
                     r"\b(change|changing|naked|undress\w*|shower\w*)|\b(change|changing|undress\w*)\b.{0,60}\btakes "
                     r"(pictures|photos|pics) of (me|her|him)\b"),
        ("special_secret", r"\b(our|a) '?special (friendship|relationship|secret|game)'?\b.{0,60}\b(secret|can't tell|"
                           r"don't tell|not tell)\b"),
        ("in_danger_now", r"\b(screaming|yelling|banging|pounding)\b.{0,80}\b(under the bed|hiding in)\b|\b(throwing|threw)"
                          r" (rocks|bricks|stones) at (the|my|our) (window|windows|door|house)\b|\b(stop|no) (daddy|"
                          r"mommy|dad|mom|mum)\b.{0,15}\bplease\b"),
        ("neglect_control", r"\b(hides|hid|hiding|withholds?|withheld|takes away|took away|locks up|locked up) my (insulin|"
                            r"meds|medication|medicine|inhaler|epi ?pen|pills|food)\b.{0,40}\b((when|whenever|if) (he|she|"
                            r"they)('s| is| are| gets?| get)? (mad|angry|upset|drunk|pissed)|to punish me|as (a )?punishment)\b"
                            r"|\b(only|barely) (get to|allowed to|let (me|us)|lets (me|us)) eat (once|one meal|one time) a day\b|"
                            r"\b(don't|doesn't|won't|refuse to|stopped) (feed|feeding) (me|us)\b|\b(hid|hides|took|takes"
                            r"|broke) my (wheelchair|walker|cane|crutches|hearing aids?)\b|\b(carer|caregiver|caretaker)"
                            r"\b.{0,60}\b(took|takes|steals|stole|hits|screams at|yells at)\b"),
        # round 6: woken up undressed with no memory, or drugged
        ("drugged", r"\bwoke up\b.{0,40}\b(naked|undressed|with my (clothes|pants|underwear|shorts) (off|gone|missing)|"
                    r"without my (clothes|pants|underwear))\b.{0,100}\b(don't|do not|can't|cannot) remember\b|\b(don't|can't) "
                    r"remember\b.{0,60}\bwoke up\b.{0,30}\b(naked|undressed|with my (clothes|pants|underwear) off)\b|"
                    r"\b(someone|he|they|somebody) (must have |might have )?(drugged|spiked) (me|my drink)\b|\bi (think i )?"
                    r"(was|got) (drugged|roofied|spiked)\b"),
        ("partner_hit", rf"\b(husband|boyfriend|wife|girlfriend|partner|dad|father|stepdad|stepfather|mom|mother)('s)?( \w+)"
                        r"{0,2} (hit|beat|punched|choked|strangled|kicked) (her|him|them)\b(?! back).{0,20}\b(so hard|"
                        r"yesterday|last night|tonight|today|again|this morning)\b"),
        ("lang_es", r"\bme (pega|golpea|maltrata|viola|violo|pegan)\b|\b(padrastro|padre|tio|abuelo|profesor|"
                    r"entrenador|novio|esposo|marido)\b.{0,30}\bme (toca|manosea)\b"),
        ("lang_nl", r"\b(slaat|schopt|mishandelt) (me|mij)\b"),
        ("lang_fr", r"\bme (frappe|bat|viole|maltraite|frappent|menace)\b|\bm'a (agresse\w*|frappe\w*|viole\w*)\b|"
                    r"\bagresse\w* sexuellement\b"),
        ("lang_de", r"\b(schlagt|verprugelt|missbraucht|vergewaltigt) mich\b"),
        ("lang_pt", r"\bme (bate|espanca|agride|estuprou|batem)\b"),
        ("lang_it", r"\bmi (picchia|picchiano|violenta|maltratta|ha violentata)\b"),
        ("lang_hi", r"\b(mujhe|muje|mujhko|hume|humein|hamein) (roz |bahut |bohot |hamesha )?(maarta|maarti|maarte|marta|"
                    r"marti|peet(ta|ti|te)) (hai|h|hain)\b|\b(pati|papa|baap|pita|sasur|saas|shohar|husband|boyfriend|"
                    r"bhai|chacha|mama)\b.{0,25}\b(maarta|maarti|peetta|peetti) (hai|h)\b"),
        ("lang_tl", r"\b(binubugbog|sinasaktan|sinampal|binugbog|ginagahasa|hinahalay|hinipuan) (ako|kami)\b"),
    ],
    "self_harm": [
        ("body", r"\b(cut|cutting|slit|slitting|slice|slicing|carv\w*|burn|burning|scratch|scratching) (into )?(my|"
                 r"both) (wrists?|arms?|legs?|thighs?|skin|stomach|hips?)\b|\bcarv\w* into my\b|\bburn my (arms?|legs?|"
                 r"skin|wrists?|thighs?) with\b"),
        ("harm_myself", r"\b(cut|cutting|burn|burning|burned|burnt|hurt|hurting|harm|harming|harmed|hit|hitting|punch|"
                        r"punching|punched|scratch|scratching|scratched|starve|starving|starved|bite|biting|bit|bruise|"
                        r"bruising|bruised|mutilate|mutilating|mutilated|slice|sliced|slicing|punish|punishing|punished)"
                        r" myself\b(?! (?:for|with) (?:not|being|eating|skipping|missing|procrastinat\w*|the|my "
                        r"(?:mistakes?|grades?|choices?))| (?:with|by) (?:an? )?(?:\d+ ?am |early |extra |long |hard )?"
                        r"(?:workout|run|cold shower|study session|gym session|diet|salad|extra (?:homework|work|chores)))"),
        ("self_harm", r"\b(i|i've been|i'm|been|i still|i keep) (self[- ]?harm(ing)?|sh(ing)?)\b|\bself[- ]?harming (is|helps|"
                      r"again|every)\b|\b(relapsed|relapse|"
                      r"relapsing)\b.{0,30}\b(sh|self[- ]?harm|cutting)\b|\b(sh|self[- ]?harm|cutting) (urges?|again|"
                      r"relapse)\b|\burges? to (cut|self[- ]?harm|sh|hurt myself|burn myself)\b"),
        ("want_to_cut", r"\b(want|need|going|about) to (cut|self[- ]?harm|sh|hurt myself|burn myself|bleed)\b(?! (?:the|a|an|"
                        r"some|your|his|her|their|our|this|that|these|those|it|them|him|back|down|off|out|in|up|ties|"
                        r"class|school|corners|costs?|loose|through|across|\d+|spending|prices?|budgets?|my (?!arms?|wrists?|legs?|"
                        r"thighs?|skin|"
                        r"stomach|hips?|body|self)\w+)\b)|"
                        r"\b(feel|need|miss|want) the (blade|razor)\b"),
        ("on_purpose", r"\b(punch|hit|cut|burn|scratch|starv|bang)\w*\b.{0,60}\b(on purpose|to feel "
                       r"something|as (a )?punishment|because i deserve)"),
        # round 6: hitting one's head on a wall as harm (not the idiom of frustration), hiding fresh cuts
        ("head_wall", r"\b(hit|hitting|bang|banging|slam|slamming)\w* my head (against|on|into) (the |a )?(wall|floor|"
                      r"desk|door|mirror)\b.{0,60}\b(so hard|until|till|bruis\w*|bled|bleed\w*|saw stars|concussion|"
                      r"when i('m| am| get| feel))"),
        ("until_bleed", r"\b(scratch|scratching|cutting|picking|hitting|biting|bang|banging|punch|punching)\b.{0,30}\buntil (they|it|i|my \w+) "
                        r"bleeds?\b"),
        ("wounds", r"\b(reopen\w*|re-open\w*) (my |the )?(old )?(scars|cuts|wounds)\b|\b(i have|i've got|got|with) "
                   r"(fresh|new) (cuts|scars|burns)\b|\b(i've|i have|i) (already )?cut (myself )?(again|twice|\d+ times|"
                   r"three times|tonight|today)\b|\bscratch\w* my (legs|arms|skin|wrists?|thighs?) (raw|until|till)\b|"
                   r"\b(on|to|into) my (wrist|wrists|arm|arms|thigh|thighs)\b.{0,30}\b(not deep|isn't deep|didn't go deep)"
                   r"|\b(the only thing that helps is|i need|reaching for) the (razor|blade)\b|\b(starving and cutting|"
                   r"cutting and starving)\b|\b(hide|hiding|cover|covering|conceal\w*) (my |the )?(fresh|new) (cuts|wounds|"
                   r"burns)\b|\b(fresh|new) cuts on my\b"),
        ("lang_es", r"\bme (corto|lastimo|hago dano)\b|\bme estoy (cortando|lastimando|haciendo dano|quemando)\b|\bme (autolesiono|he autolesionado)\b|"
                    r"\b(estoy|sigo) autolesionandome\b|\bautolesionarme\b"),
        ("lang_fr", r"\bje me (scarifie|coupe|mutile|fais du mal)\b|\bme scarifier\b"),
        ("lang_de", r"\b(ich )?ritze mich\b|\bmich ritzen\b|\bich verletze mich\b|\bich will mich (\w+ ){0,3}"
                    r"verletzen\b"),
        ("lang_pt", r"\b(eu )?me (corto|machuco|automutilo)\b|\b(to|estou|tou) me (cortando|machucando)\b|\bme cortar\b|\b(estou|to|tou) me automutilando\b|"
                    r"\bme automutil(ar|ei)\b"),
        ("lang_it", r"\bmi (taglio|faccio del male|ferisco|autolesiono)\b|\bautolesionarmi\b"),
        ("lang_hi", r"\b(haath|hath|kalai|baazu|baju) (\w+ )?(kaat|kat) (liya|li|raha|rahi|leta|leti|lunga|lungi)\b|\bkhud "
                    r"ko (chot|nuksan|nuksaan|dard) (pahunchata|pahunchati|deta|deti)\b"),
        ("lang_tl", r"\b(naglalaslas|naglaslas|maglaslas)\b|\b(hinihiwa|sinusugatan|hiniwa) ko (ang )?(sarili|braso|"
                    r"pulso|kamay)\b"),
    ],
}

# The order categories are tried in: an emergency in progress first.
ORDER = ("medical_emergency", "suicide", "harm_to_others", "abuse", "self_harm")

COMPILED: dict[str, list[tuple[str, re.Pattern]]] = {
    cat: [(name, re.compile(p)) for name, p in RULES[cat]] for cat in ORDER
}
